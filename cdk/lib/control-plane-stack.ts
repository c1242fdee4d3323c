// The control plane (DESIGN.md §1): the webhooks Lambda behind an HTTP API, the single
// DynamoDB table, the call-events FIFO queue with its dead-letter queue, and the key that signs
// media-stream tokens.
//
// Everything the Lambda may touch is granted explicitly and narrowly: read/write on this table
// (and its indexes), send on the two queues, read on the one secret. No resource wildcards.
import * as path from 'node:path';

import * as cdk from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';

/** The provider slugs that appear in webhook paths (`vaani_events::Provider`, lowercase). */
export const PROVIDERS = ['twilio', 'exotel', 'plivo', 'telnyx', 'signalwire'] as const;

/** Names of the FIFO queues; FIFO queue names must end in `.fifo`. */
export const CALL_EVENTS_QUEUE_NAME = 'vaani-call-events.fifo';
export const CALL_EVENTS_DLQ_NAME = 'vaani-call-events-dlq.fifo';

/** Webhook routes served by the webhooks Lambda (HTTP API route keys). */
export const WEBHOOK_ROUTES: ReadonlyArray<{ path: string; methods: apigwv2.HttpMethod[] }> = [
  // Provider status callbacks. Exotel Passthru and some Plivo callbacks arrive as GET.
  { path: '/v1/{tenant}/{provider}/status', methods: [apigwv2.HttpMethod.POST, apigwv2.HttpMethod.GET] },
  // Answer webhooks: the Lambda answers with TwiML / Plivo XML / TeXML / Exotel JSON.
  { path: '/v1/{tenant}/{provider}/answer', methods: [apigwv2.HttpMethod.POST, apigwv2.HttpMethod.GET] },
  // Universal status endpoint: the Lambda detects the provider from headers and body.
  { path: '/v1/{tenant}/status', methods: [apigwv2.HttpMethod.POST] },
  { path: '/healthz', methods: [apigwv2.HttpMethod.GET] },
];

export type LambdaArch = 'x86_64' | 'arm64';

/** Deploy-time choices, usually from CDK context (see {@link controlPlaneSettingsFromContext}). */
export interface ControlPlaneSettings {
  /**
   * CPU architecture of the webhooks Lambda. x86_64 is the default because `cargo lambda build`
   * targets it with no extra setup. arm64 (Graviton) is about 20% cheaper per GB-second; it needs
   * `rustup target add aarch64-unknown-linux-gnu` on the machine that runs `cdk deploy`.
   * @default 'x86_64'
   */
  readonly lambdaArchitecture?: LambdaArch;
  /**
   * Public https base URL providers call (e.g. a custom domain in front of the API), used by the
   * Lambda to rebuild the exact URL a provider signed. Unset: derived from the API's own domain.
   */
  readonly publicBaseUrl?: string;
  /** `RUST_LOG` for the Lambda. @default 'info' */
  readonly rustLog?: string;
  /** Steady-state request rate limit of the API's default stage (requests/second). @default 100 */
  readonly apiRateLimit?: number;
  /** Burst limit of the API's default stage. @default 200 */
  readonly apiBurstLimit?: number;
  /**
   * Path to the workspace `Cargo.toml` that holds the `webhooks` binary.
   * @default the repository root, two levels above this file
   */
  readonly manifestPath?: string;
}

export interface ControlPlaneStackProps extends cdk.StackProps, ControlPlaneSettings {}

/** Read {@link ControlPlaneSettings} from context keys `vaani:*` (strings from `-c` are parsed). */
export function controlPlaneSettingsFromContext(scope: Construct): ControlPlaneSettings {
  const ctx = (key: string): unknown => scope.node.tryGetContext(key);
  const num = (key: string): number | undefined => {
    const v = ctx(key);
    if (v === undefined || v === null || v === '') return undefined;
    const n = typeof v === 'number' ? v : Number(v);
    if (!Number.isFinite(n) || n <= 0) {
      throw new Error(`context ${key} must be a positive number, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  const str = (key: string): string | undefined => {
    const v = ctx(key);
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw new Error(`context ${key} must be a string`);
    return v;
  };
  const arch = str('vaani:lambdaArchitecture');
  if (arch !== undefined && arch !== 'x86_64' && arch !== 'arm64') {
    throw new Error(`context vaani:lambdaArchitecture must be x86_64 or arm64, got ${JSON.stringify(arch)}`);
  }
  return {
    lambdaArchitecture: arch as LambdaArch | undefined,
    publicBaseUrl: str('vaani:publicBaseUrl'),
    rustLog: str('vaani:rustLog'),
    apiRateLimit: num('vaani:apiRateLimit'),
    apiBurstLimit: num('vaani:apiBurstLimit'),
  };
}

function checkPublicBaseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`publicBaseUrl is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'https:') throw new Error('publicBaseUrl must be an https:// URL');
  if (parsed.search || parsed.hash) throw new Error('publicBaseUrl must not have a query or fragment');
  // Stored without a trailing slash: the Lambda appends the request path to it.
  return url.replace(/\/+$/, '');
}

/**
 * CDK makes a function `DependsOn` both its role and the role's default policy. The role is
 * already implied by the `Role: GetAtt` (cfn-lint W3005), so keep only the policy: the function
 * must not run before its grants are attached.
 */
function dependOnlyOnDefaultPolicy(fn: lambda.Function): void {
  const policy = fn.role?.node.tryFindChild('DefaultPolicy');
  const cfnFn = fn.node.defaultChild as lambda.CfnFunction;
  if (policy instanceof iam.Policy) {
    cfnFn.addOverride('DependsOn', [(policy.node.defaultChild as iam.CfnPolicy).logicalId]);
  }
}

export class ControlPlaneStack extends cdk.Stack {
  readonly table: dynamodb.Table;
  readonly callEventsQueue: sqs.Queue;
  readonly callEventsDlq: sqs.Queue;
  readonly mediaTokenSecret: secretsmanager.Secret;
  readonly webhooksFunction: lambda.Function;
  readonly webhooksLogGroup: logs.LogGroup;
  readonly api: apigwv2.HttpApi;

  constructor(scope: Construct, id: string, props: ControlPlaneStackProps = {}) {
    super(scope, id, props);

    // ---- State: one table for calls, events, tenants, agents, nodes, ledger, campaigns ----
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'expires_at',
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // Call history and the ledger outlive any one deployment.
      removalPolicy: cdk.RemovalPolicy.RETAIN,
    });
    // Key layout (infra/store/src/aws.rs): gsi1 finds a call by its provider call id; gsi2
    // lists a tenant's calls newest first.
    for (const gsi of ['gsi1', 'gsi2']) {
      this.table.addGlobalSecondaryIndex({
        indexName: gsi,
        partitionKey: { name: `${gsi}pk`, type: dynamodb.AttributeType.STRING },
        sortKey: { name: `${gsi}sk`, type: dynamodb.AttributeType.STRING },
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }

    // ---- Work: call events, ordered per call (message group = call id) ----
    this.callEventsDlq = new sqs.Queue(this, 'CallEventsDlq', {
      queueName: CALL_EVENTS_DLQ_NAME,
      fifo: true,
      contentBasedDeduplication: false,
      retentionPeriod: cdk.Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.callEventsQueue = new sqs.Queue(this, 'CallEventsQueue', {
      queueName: CALL_EVENTS_QUEUE_NAME,
      fifo: true,
      // The producer sets MessageDeduplicationId = CallEvent::dedupe_id, so a provider's retry of
      // the same webhook is dropped by SQS within its 5-minute window.
      contentBasedDeduplication: false,
      visibilityTimeout: cdk.Duration.seconds(60),
      retentionPeriod: cdk.Duration.days(4),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.callEventsDlq, maxReceiveCount: 5 },
    });

    // ---- Secret: HMAC key for the short-lived tokens in media-stream URLs ----
    this.mediaTokenSecret = new secretsmanager.Secret(this, 'MediaTokenSecret', {
      description: 'Vaani: HMAC key that signs media-stream URL tokens',
      generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
    });

    // ---- The webhooks Lambda ----
    const arch = props.lambdaArchitecture ?? 'x86_64';
    const architecture = arch === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    this.webhooksLogGroup = new logs.LogGroup(this, 'WebhooksLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
    });
    const environment: Record<string, string> = {
      VAANI_TABLE: this.table.tableName,
      VAANI_CALL_EVENTS_QUEUE_URL: this.callEventsQueue.queueUrl,
      VAANI_CALL_EVENTS_DLQ_URL: this.callEventsDlq.queueUrl,
      VAANI_MEDIA_TOKEN_SECRET_ARN: this.mediaTokenSecret.secretArn,
      RUST_LOG: props.rustLog ?? 'info',
    };
    if (props.publicBaseUrl !== undefined) {
      environment.VAANI_PUBLIC_BASE_URL = checkPublicBaseUrl(props.publicBaseUrl);
    }
    this.webhooksFunction = new RustFunction(this, 'Webhooks', {
      manifestPath: props.manifestPath ?? path.join(__dirname, '..', '..', 'Cargo.toml'),
      binaryName: 'webhooks',
      architecture,
      bundling: {
        architecture,
        // The workspace root is itself a package; name the one that owns the binary.
        cargoLambdaFlags: ['--package', 'vaani-webhooks'],
      },
      description: 'Vaani provider webhooks: verify, normalise, answer',
      memorySize: 256,
      timeout: cdk.Duration.seconds(10),
      environment,
      logGroup: this.webhooksLogGroup,
    });
    this.table.grantReadWriteData(this.webhooksFunction);
    this.callEventsQueue.grantSendMessages(this.webhooksFunction);
    this.callEventsDlq.grantSendMessages(this.webhooksFunction);
    this.mediaTokenSecret.grantRead(this.webhooksFunction);
    dependOnlyOnDefaultPolicy(this.webhooksFunction);

    // ---- HTTP API (payload format 2.0) ----
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
    });
    this.api = new apigwv2.HttpApi(this, 'Api', {
      apiName: 'vaani-webhooks',
      description: 'Vaani provider webhooks',
      createDefaultStage: false,
    });
    this.api.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      throttle: {
        rateLimit: props.apiRateLimit ?? 100,
        burstLimit: props.apiBurstLimit ?? 200,
      },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(accessLogs),
        // Route keys, not raw paths or query strings: Exotel Passthru puts phone numbers in
        // the query, and those stay out of logs.
        format: cdk.aws_apigateway.AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            requestTime: '$context.requestTime',
            routeKey: '$context.routeKey',
            status: '$context.status',
            responseLength: '$context.responseLength',
            integrationLatency: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
          }),
        ),
      },
    });
    const integration = new HttpLambdaIntegration('WebhooksIntegration', this.webhooksFunction, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    });
    for (const route of WEBHOOK_ROUTES) {
      this.api.addRoutes({ path: route.path, methods: route.methods, integration });
    }

    // ---- Alarm: anything in the DLQ means a call event was not processed ----
    new cloudwatch.Alarm(this, 'CallEventsDlqNotEmpty', {
      alarmDescription: 'Vaani call events are landing in the dead-letter queue',
      metric: this.callEventsDlq.metricApproximateNumberOfMessagesVisible({
        period: cdk.Duration.minutes(5),
        statistic: cloudwatch.Stats.MAXIMUM,
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // ---- Outputs ----
    const base = this.api.apiEndpoint;
    new cdk.CfnOutput(this, 'ApiUrl', { value: base, description: 'Base URL of the webhooks HTTP API' });
    new cdk.CfnOutput(this, 'UniversalStatusUrl', {
      value: `${base}/v1/{tenant}/status`,
      description: 'Status callbacks from any provider (detected); replace {tenant}',
    });
    for (const p of PROVIDERS) {
      const name = p.charAt(0).toUpperCase() + p.slice(1);
      new cdk.CfnOutput(this, `${name}AnswerUrl`, {
        value: `${base}/v1/{tenant}/${p}/answer`,
        description: `${name} answer webhook; replace {tenant}`,
      });
      new cdk.CfnOutput(this, `${name}StatusUrl`, {
        value: `${base}/v1/{tenant}/${p}/status`,
        description: `${name} status callback; replace {tenant}`,
      });
    }
    new cdk.CfnOutput(this, 'TableName', { value: this.table.tableName });
    new cdk.CfnOutput(this, 'CallEventsQueueUrl', { value: this.callEventsQueue.queueUrl });
    new cdk.CfnOutput(this, 'CallEventsDlqUrl', { value: this.callEventsDlq.queueUrl });
    new cdk.CfnOutput(this, 'MediaTokenSecretArn', { value: this.mediaTokenSecret.secretArn });
    new cdk.CfnOutput(this, 'WebhooksFunctionName', { value: this.webhooksFunction.functionName });
  }
}
