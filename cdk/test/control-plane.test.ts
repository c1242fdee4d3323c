// Assertions on the synthesized control-plane template. Run: `npm test`.
//
// The app context comes from cdk.json (feature flags, pre-seeded AZs) so these tests see what
// `cdk synth` sees. Rust bundling is skipped: `aws:cdk:bundling-stacks: []`.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import * as cdk from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';

import {
  CALL_EVENTS_DLQ_NAME,
  CALL_EVENTS_QUEUE_NAME,
  ControlPlaneStack,
  ControlPlaneStackProps,
  PROVIDERS,
  controlPlaneSettingsFromContext,
} from '../lib/control-plane-stack';

const CDK_DIR = path.join(__dirname, '..');
const CDK_JSON_CONTEXT: Record<string, unknown> = JSON.parse(
  fs.readFileSync(path.join(CDK_DIR, 'cdk.json'), 'utf8'),
).context;
const ENV = { account: '123456789012', region: 'ap-south-1' };

function makeApp(extraContext: Record<string, unknown> = {}): cdk.App {
  return new cdk.App({
    context: { ...CDK_JSON_CONTEXT, 'aws:cdk:bundling-stacks': [], ...extraContext },
  });
}

function synth(props: ControlPlaneStackProps = {}): { app: cdk.App; stack: ControlPlaneStack; template: Template } {
  const app = makeApp();
  const stack = new ControlPlaneStack(app, 'TestControlPlane', { env: ENV, ...props });
  return { app, stack, template: Template.fromStack(stack) };
}

const { app, stack, template } = synth();
const resources = template.toJSON().Resources as Record<string, { Type: string; Properties: any }>;

function logicalIdOf(construct: { node: { defaultChild?: unknown } }): string {
  return stack.getLogicalId(construct.node.defaultChild as cdk.CfnElement);
}

describe('DynamoDB table', () => {
  it('has pk/sk string keys, gsi1 and gsi2 with ALL projection, TTL on expires_at, on-demand, PITR', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      AttributeDefinitions: Match.arrayWith([
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
        { AttributeName: 'gsi1pk', AttributeType: 'S' },
        { AttributeName: 'gsi1sk', AttributeType: 'S' },
        { AttributeName: 'gsi2pk', AttributeType: 'S' },
        { AttributeName: 'gsi2sk', AttributeType: 'S' },
      ]),
      GlobalSecondaryIndexes: ['gsi1', 'gsi2'].map((g) => ({
        IndexName: g,
        KeySchema: [
          { AttributeName: `${g}pk`, KeyType: 'HASH' },
          { AttributeName: `${g}sk`, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      })),
      BillingMode: 'PAY_PER_REQUEST',
      TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });
  });

  it('is retained when the stack goes', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
    });
  });
});

describe('call-events queues', () => {
  it('are FIFO, encrypted, without content-based deduplication', () => {
    template.resourceCountIs('AWS::SQS::Queue', 2);
    for (const name of [CALL_EVENTS_QUEUE_NAME, CALL_EVENTS_DLQ_NAME]) {
      template.hasResourceProperties('AWS::SQS::Queue', {
        QueueName: name,
        FifoQueue: true,
        ContentBasedDeduplication: false,
        SqsManagedSseEnabled: true,
      });
    }
  });

  it('main queue: 60 s visibility, 4 days retention, redrive to the DLQ after 5 receives', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      QueueName: 'vaani-call-events.fifo',
      VisibilityTimeout: 60,
      MessageRetentionPeriod: 4 * 24 * 3600,
      RedrivePolicy: {
        deadLetterTargetArn: { 'Fn::GetAtt': [logicalIdOf(stack.callEventsDlq), 'Arn'] },
        maxReceiveCount: 5,
      },
    });
  });

  it('DLQ keeps messages 14 days and has no redrive of its own', () => {
    const dlq = resources[logicalIdOf(stack.callEventsDlq)];
    assert.equal(dlq.Properties.QueueName, 'vaani-call-events-dlq.fifo');
    assert.equal(dlq.Properties.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(dlq.Properties.RedrivePolicy, undefined);
  });

  it('refuse non-TLS access', () => {
    template.resourceCountIs('AWS::SQS::QueuePolicy', 2);
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  it('an alarm fires when the DLQ holds anything', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Namespace: 'AWS/SQS',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [logicalIdOf(stack.callEventsDlq), 'QueueName'] } }],
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      TreatMissingData: 'notBreaching',
    });
  });
});

describe('webhooks Lambda', () => {
  const fnId = logicalIdOf(stack.webhooksFunction);
  const fn = resources[fnId];

  it('is a provided.al2023 bootstrap on x86_64 with 256 MB and 10 s', () => {
    assert.equal(fn.Type, 'AWS::Lambda::Function');
    assert.equal(fn.Properties.Runtime, 'provided.al2023');
    assert.equal(fn.Properties.Handler, 'bootstrap');
    assert.deepEqual(fn.Properties.Architectures, ['x86_64']);
    assert.equal(fn.Properties.MemorySize, 256);
    assert.equal(fn.Properties.Timeout, 10);
  });

  it('gets exactly the documented environment, wired to this stack', () => {
    assert.deepEqual(fn.Properties.Environment.Variables, {
      VAANI_TABLE: { Ref: logicalIdOf(stack.table) },
      VAANI_CALL_EVENTS_QUEUE_URL: { Ref: logicalIdOf(stack.callEventsQueue) },
      VAANI_CALL_EVENTS_DLQ_URL: { Ref: logicalIdOf(stack.callEventsDlq) },
      VAANI_MEDIA_TOKEN_SECRET_ARN: { Ref: logicalIdOf(stack.mediaTokenSecret) },
      RUST_LOG: 'info',
    });
  });

  it('sets VAANI_PUBLIC_BASE_URL only when given, without a trailing slash', () => {
    const { template: t } = synth({ publicBaseUrl: 'https://hooks.example.in/', rustLog: 'debug' });
    t.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({ VAANI_PUBLIC_BASE_URL: 'https://hooks.example.in', RUST_LOG: 'debug' }),
      },
    });
    assert.throws(() => synth({ publicBaseUrl: 'http://hooks.example.in' }), /https/);
    assert.throws(() => synth({ publicBaseUrl: 'https://hooks.example.in/?x=1' }), /query/);
    assert.throws(() => synth({ publicBaseUrl: 'not a url' }), /not a URL/);
  });

  it('can run on arm64', () => {
    const { template: t } = synth({ lambdaArchitecture: 'arm64' });
    t.hasResourceProperties('AWS::Lambda::Function', { Architectures: ['arm64'] });
  });

  it('logs to its own log group kept for a month', () => {
    assert.deepEqual(fn.Properties.LoggingConfig, { LogGroup: { Ref: logicalIdOf(stack.webhooksLogGroup) } });
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  it('waits for its policy without a redundant DependsOn on its role (cfn-lint W3005)', () => {
    const policyId = stack.getLogicalId(
      stack.webhooksFunction.role!.node.findChild('DefaultPolicy').node.defaultChild as cdk.CfnElement,
    );
    assert.deepEqual(template.toJSON().Resources[fnId].DependsOn, [policyId]);
  });
});

describe('IAM', () => {
  const statements = Object.values(resources)
    .filter((r) => r.Type === 'AWS::IAM::Policy')
    .flatMap((r) => r.Properties.PolicyDocument.Statement as any[]);
  const asList = <T>(x: T | T[]): T[] => (Array.isArray(x) ? x : [x]);

  it('has one inline policy, on the webhooks role', () => {
    template.resourceCountIs('AWS::IAM::Policy', 1);
    template.resourceCountIs('AWS::IAM::Role', 1);
  });

  it('never grants on Resource "*" nor uses wildcard actions', () => {
    assert.ok(statements.length > 0);
    for (const s of statements) {
      for (const r of asList(s.Resource)) {
        assert.notEqual(r, '*', `wildcard resource in ${JSON.stringify(s)}`);
        if (typeof r === 'string') assert.fail(`literal resource ${r}: expected a reference into this stack`);
      }
      for (const a of asList(s.Action as string | string[])) {
        assert.ok(!a.includes('*'), `wildcard action ${a}`);
      }
    }
  });

  it('scopes every grant to this stack’s table, queues and secret', () => {
    const ids = new Set([
      logicalIdOf(stack.table),
      logicalIdOf(stack.callEventsQueue),
      logicalIdOf(stack.callEventsDlq),
      logicalIdOf(stack.mediaTokenSecret),
    ]);
    const referenced = (v: unknown): string[] => {
      const found: string[] = [];
      const walk = (x: unknown): void => {
        if (Array.isArray(x)) x.forEach(walk);
        else if (x && typeof x === 'object') {
          for (const [k, val] of Object.entries(x)) {
            if (k === 'Ref' && typeof val === 'string') found.push(val);
            else if (k === 'Fn::GetAtt' && Array.isArray(val)) found.push(val[0]);
            else walk(val);
          }
        }
      };
      walk(v);
      return found;
    };
    for (const s of statements) {
      for (const r of asList(s.Resource)) {
        const refs = referenced(r);
        assert.ok(refs.length > 0 && refs.every((id) => ids.has(id)), `unexpected resource ${JSON.stringify(r)}`);
      }
    }
  });

  it('grants what the handler needs and no more', () => {
    const actionsOn = (id: string): Set<string> =>
      new Set(
        statements
          .filter((s) => JSON.stringify(s.Resource).includes(`"${id}"`))
          .flatMap((s) => asList(s.Action as string | string[])),
      );
    const secret = actionsOn(logicalIdOf(stack.mediaTokenSecret));
    assert.deepEqual([...secret].sort(), ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
    for (const q of [stack.callEventsQueue, stack.callEventsDlq]) {
      const a = actionsOn(logicalIdOf(q));
      assert.ok(a.has('sqs:SendMessage'));
      assert.ok(!a.has('sqs:DeleteMessage') && !a.has('sqs:ReceiveMessage') && !a.has('sqs:PurgeQueue'));
    }
    const table = actionsOn(logicalIdOf(stack.table));
    for (const a of ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query', 'dynamodb:ConditionCheckItem']) {
      assert.ok(table.has(a), `missing ${a}`);
    }
    assert.ok(!table.has('dynamodb:DeleteTable') && !table.has('dynamodb:UpdateTable'));
  });

  it('lets only this API invoke the function', () => {
    const perms = Object.values(resources).filter((r) => r.Type === 'AWS::Lambda::Permission');
    assert.ok(perms.length > 0);
    const apiId = logicalIdOf(stack.api);
    for (const p of perms) {
      assert.equal(p.Properties.Principal, 'apigateway.amazonaws.com');
      assert.equal(p.Properties.Action, 'lambda:InvokeFunction');
      assert.ok(JSON.stringify(p.Properties.SourceArn).includes(`"${apiId}"`));
    }
  });
});

describe('HTTP API', () => {
  it('serves exactly the webhook routes', () => {
    const routeKeys = Object.values(resources)
      .filter((r) => r.Type === 'AWS::ApiGatewayV2::Route')
      .map((r) => r.Properties.RouteKey)
      .sort();
    assert.deepEqual(routeKeys, [
      'GET /healthz',
      'GET /v1/{tenant}/{provider}/answer',
      'GET /v1/{tenant}/{provider}/status',
      'POST /v1/{tenant}/status',
      'POST /v1/{tenant}/{provider}/answer',
      'POST /v1/{tenant}/{provider}/status',
    ]);
  });

  it('routes everything to the webhooks Lambda with payload format 2.0', () => {
    template.resourceCountIs('AWS::ApiGatewayV2::Integration', 1);
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      PayloadFormatVersion: '2.0',
      IntegrationUri: { 'Fn::GetAtt': [logicalIdOf(stack.webhooksFunction), 'Arn'] },
    });
  });

  it('has one auto-deployed $default stage, throttled, with access logs', () => {
    template.resourceCountIs('AWS::ApiGatewayV2::Stage', 1);
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('\\$context\\.requestId') },
    });
  });

  it('keeps raw paths and query strings (phone numbers) out of access logs', () => {
    const stage = Object.values(resources).find((r) => r.Type === 'AWS::ApiGatewayV2::Stage');
    const format: string = stage!.Properties.AccessLogSettings.Format;
    assert.ok(!format.includes('$context.path') && !format.includes('querystring'));
  });

  it('takes throttle limits from settings', () => {
    const { template: t } = synth({ apiRateLimit: 7, apiBurstLimit: 9 });
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 7, ThrottlingBurstLimit: 9 },
    });
  });
});

describe('outputs', () => {
  it('give the API URL and every provider’s webhook URLs', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const endpoint = { 'Fn::GetAtt': [logicalIdOf(stack.api), 'ApiEndpoint'] };
    assert.deepEqual(outputs.ApiUrl.Value, endpoint);
    assert.deepEqual(outputs.UniversalStatusUrl.Value, { 'Fn::Join': ['', [endpoint, '/v1/{tenant}/status']] });
    for (const p of PROVIDERS) {
      const name = p.charAt(0).toUpperCase() + p.slice(1);
      assert.deepEqual(outputs[`${name}AnswerUrl`].Value, { 'Fn::Join': ['', [endpoint, `/v1/{tenant}/${p}/answer`]] });
      assert.deepEqual(outputs[`${name}StatusUrl`].Value, { 'Fn::Join': ['', [endpoint, `/v1/{tenant}/${p}/status`]] });
    }
    for (const k of ['TableName', 'CallEventsQueueUrl', 'CallEventsDlqUrl', 'MediaTokenSecretArn', 'WebhooksFunctionName']) {
      assert.ok(outputs[k], `missing output ${k}`);
    }
  });
});

describe('synthesis', () => {
  it('has no errors or warnings, and needs no context lookups', () => {
    Annotations.fromStack(stack).hasNoError('*', Match.anyValue());
    Annotations.fromStack(stack).hasNoWarning('*', Match.anyValue());
    const assembly = app.synth();
    assert.equal(assembly.manifest.missing, undefined, 'missing context: pre-seed it in cdk.json');
  });

  it('reads settings from vaani:* context, parsing strings from -c', () => {
    const a = makeApp({
      'vaani:lambdaArchitecture': 'arm64',
      'vaani:apiRateLimit': '25',
      'vaani:apiBurstLimit': 50,
      'vaani:publicBaseUrl': 'https://x.example',
    });
    assert.deepEqual(controlPlaneSettingsFromContext(a), {
      lambdaArchitecture: 'arm64',
      publicBaseUrl: 'https://x.example',
      rustLog: undefined,
      apiRateLimit: 25,
      apiBurstLimit: 50,
    });
    assert.throws(() => controlPlaneSettingsFromContext(makeApp({ 'vaani:lambdaArchitecture': 'arm' })), /x86_64 or arm64/);
    assert.throws(() => controlPlaneSettingsFromContext(makeApp({ 'vaani:apiRateLimit': 'fast' })), /positive number/);
  });

  it('the app synthesizes offline with vaani:skipBundling and warns not to deploy that', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vaani-cdk-'));
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/vaani.ts'], {
        cwd: CDK_DIR,
        encoding: 'utf8',
        env: {
          ...process.env,
          CDK_OUTDIR: out,
          CDK_CONTEXT_JSON: JSON.stringify({ ...CDK_JSON_CONTEXT, 'vaani:skipBundling': 'true' }),
          CDK_DEFAULT_ACCOUNT: '',
        },
      });
      assert.equal(r.status, 0, r.stderr);
      const tpl = JSON.parse(fs.readFileSync(path.join(out, 'VaaniControlPlane.template.json'), 'utf8'));
      const fns = Object.values(tpl.Resources as Record<string, { Type: string }>).filter(
        (x) => x.Type === 'AWS::Lambda::Function',
      );
      assert.equal(fns.length, 1);
      const manifest = fs.readFileSync(path.join(out, 'manifest.json'), 'utf8');
      assert.match(manifest, /"environment": "aws:\/\/123456789012\/ap-south-1"/);
      // The warning lands in the stack's metadata (its own file in newer assemblies).
      const everything = fs
        .readdirSync(out)
        .filter((f) => f.endsWith('.json'))
        .map((f) => fs.readFileSync(path.join(out, f), 'utf8'))
        .join('\n');
      assert.match(everything, /do not deploy it/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
