//! The webhooks Lambda: API Gateway (HTTP API, payload 2.0) → [`vaani_webhooks::handle`] over
//! DynamoDB + SQS.
//!
//! Configuration (environment, validated once at cold start; a bad value names its key):
//! - `VAANI_TABLE`: DynamoDB table name (required);
//! - `VAANI_CALL_EVENTS_QUEUE_URL`, `VAANI_CALL_EVENTS_DLQ_URL`: SQS FIFO queue URLs (required);
//! - `VAANI_MEDIA_TOKEN_SECRET_ARN`: Secrets Manager secret holding the media-token HMAC key, or
//!   `VAANI_MEDIA_TOKEN_KEY` (the key itself, for local runs); one is required;
//! - `VAANI_PUBLIC_BASE_URL`: `https://host` providers call (custom domain); default: the
//!   API Gateway domain of the request;
//! - `VAANI_AWS_ENDPOINT_URL`: a local endpoint (moto) for `cargo lambda watch`; static test
//!   credentials are then used and nothing else is read from the environment;
//! - `AWS_REGION` (set by Lambda), `RUST_LOG`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use lambda_http::{service_fn, Error, Request};
use vaani_store::aws::{AwsConfig, AwsStore};
use vaani_store::queues;
use vaani_webhooks::lambda::{to_response, to_webhook_request};
use vaani_webhooks::{handle, Deps};

struct Config {
    aws: AwsConfig,
    public_base_url: Option<String>,
    token_key: TokenKey,
}

enum TokenKey {
    SecretArn(String),
    Inline(Vec<u8>),
}

fn env(key: &str) -> Option<String> {
    std::env::var(key)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(key: &str) -> anyhow::Result<String> {
    env(key).ok_or_else(|| anyhow!("missing environment variable {key}"))
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let mut queue_urls = BTreeMap::new();
        for (name, key) in [
            (queues::CALL_EVENTS, "VAANI_CALL_EVENTS_QUEUE_URL"),
            (queues::CALL_EVENTS_DLQ, "VAANI_CALL_EVENTS_DLQ_URL"),
        ] {
            let url = required(key)?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("{key} must be an SQS queue URL, got {url:?}");
            }
            queue_urls.insert(name.to_string(), url);
        }
        let public_base_url = match env("VAANI_PUBLIC_BASE_URL") {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                Some(u.trim_end_matches('/').to_string())
            }
            Some(u) => bail!("VAANI_PUBLIC_BASE_URL must be an http(s) URL, got {u:?}"),
            None => None,
        };
        let token_key = match (
            env("VAANI_MEDIA_TOKEN_SECRET_ARN"),
            env("VAANI_MEDIA_TOKEN_KEY"),
        ) {
            (Some(arn), _) => TokenKey::SecretArn(arn),
            (None, Some(k)) if k.len() >= 32 => TokenKey::Inline(k.into_bytes()),
            (None, Some(_)) => bail!("VAANI_MEDIA_TOKEN_KEY must be at least 32 characters"),
            (None, None) => {
                bail!("set VAANI_MEDIA_TOKEN_SECRET_ARN (or VAANI_MEDIA_TOKEN_KEY locally)")
            }
        };
        Ok(Config {
            aws: AwsConfig {
                table: required("VAANI_TABLE")?,
                queue_urls,
                endpoint_url: env("VAANI_AWS_ENDPOINT_URL"),
                region: env("AWS_REGION").unwrap_or_else(|| "ap-south-1".to_string()),
            },
            public_base_url,
            token_key,
        })
    }
}

async fn media_token_key(cfg: &Config) -> anyhow::Result<Vec<u8>> {
    match &cfg.token_key {
        TokenKey::Inline(k) => Ok(k.clone()),
        TokenKey::SecretArn(arn) => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(cfg.aws.region.clone()))
                .load()
                .await;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            let out = client
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .context("reading the media-token secret (VAANI_MEDIA_TOKEN_SECRET_ARN)")?;
            let key = out
                .secret_string()
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| out.secret_binary().map(|b| b.as_ref().to_vec()))
                .ok_or_else(|| anyhow!("the media-token secret is empty"))?;
            if key.len() < 32 {
                bail!("the media-token secret must be at least 32 bytes");
            }
            Ok(key)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_target(false)
        .without_time()
        .init();
    let cfg = Config::from_env().map_err(|e| {
        tracing::error!(error = %e, "bad configuration");
        e
    })?;
    let key = media_token_key(&cfg).await?;
    let stores = AwsStore::connect(&cfg.aws).await.stores();
    let deps = Deps::new(stores, key);
    let base = cfg.public_base_url.clone();
    lambda_http::run(service_fn(move |event: Request| {
        let deps = deps.clone();
        let base = base.clone();
        async move {
            let resp = handle(to_webhook_request(event, base.as_deref()), &deps).await;
            to_response(resp).map_err(Error::from)
        }
    }))
    .await
}
