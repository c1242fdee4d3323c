#!/usr/bin/env node
// The Vaani CDK app: today one stack, the control plane (webhooks Lambda, HTTP API, DynamoDB
// table, call-events queues). The media-node stack joins when the media node exists.
//
// Account: CDK_DEFAULT_ACCOUNT (set by the CLI from your credentials) or context `vaani:account`
// (cdk.json carries a placeholder so `cdk synth` works offline). Region: context `vaani:region`,
// default ap-south-1 (Mumbai), close to Indian callers and to Exotel/Plivo India.
import * as cdk from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { ControlPlaneStack, controlPlaneSettingsFromContext } from '../lib/control-plane-stack';

const app = new cdk.App();

// `-c vaani:skipBundling=true` synthesizes without building the Rust Lambda (offline synth,
// template checks). The CDK CLI refuses user context keys starting with `aws:`, so this sets
// `aws:cdk:bundling-stacks` from inside the app, before any stack exists. The assembly it
// writes points the Lambda's code at the source tree: never deploy it.
const skipBundling = ['true', true].includes(app.node.tryGetContext('vaani:skipBundling'));
if (skipBundling) {
  app.node.setContext(cxapi.BUNDLING_STACKS, []);
}

const account: string | undefined =
  process.env.CDK_DEFAULT_ACCOUNT || app.node.tryGetContext('vaani:account');
const region: string = app.node.tryGetContext('vaani:region') ?? 'ap-south-1';

const controlPlane = new ControlPlaneStack(app, 'VaaniControlPlane', {
  env: { account, region },
  description: 'Vaani control plane: provider webhooks Lambda, HTTP API, DynamoDB table, call-events queues',
  ...controlPlaneSettingsFromContext(app),
});

if (skipBundling) {
  cdk.Annotations.of(controlPlane).addWarningV2(
    'vaani:skipBundling',
    'Rust bundling skipped (vaani:skipBundling): this synth output is for inspection only; do not deploy it.',
  );
}

cdk.Tags.of(app).add('project', 'vaani');
