//! The API Gateway sample events in `events/samples/apigw/` (the ones `cargo lambda invoke`
//! takes) go through the Lambda adapter and the handler, signatures and all.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "lambda")]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vaani_events::{CallStatus, Provider};
use vaani_store::embedded::EmbeddedStore;
use vaani_store::{ProviderCredentials, Stores, Tenant};
use vaani_webhooks::lambda::to_webhook_request;
use vaani_webhooks::{handle, Deps};

/// `timeEpoch` of the samples (2026-01-15T10:30:00Z): the Telnyx timestamp is signed for it.
fn sample_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-15T10:30:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap()
}

async fn demo() -> (Deps, Stores) {
    let stores = EmbeddedStore::open_in_memory()
        .unwrap()
        .with_clock(Arc::new(sample_time))
        .stores();
    let mut credentials = std::collections::BTreeMap::new();
    let c = |secret: &str| ProviderCredentials {
        secret: secret.into(),
        ..Default::default()
    };
    credentials.insert(Provider::Twilio, c("demo-twilio-token"));
    credentials.insert(Provider::Plivo, c("demo-plivo-token"));
    credentials.insert(
        Provider::Telnyx,
        c("SNPY3IqQsHlOjDYALDxfUGgndehneauP6UhKXzQ0X54="),
    );
    credentials.insert(
        Provider::Exotel,
        ProviderCredentials {
            api_key: Some("demo-key".into()),
            ..c("demo-exotel-token")
        },
    );
    stores
        .tenants
        .put_tenant(&Tenant {
            id: "demo".into(),
            name: "Demo".into(),
            fallback_message: "Please call back later.".into(),
            credentials,
        })
        .await
        .unwrap();
    let mut deps = Deps::new(stores.clone(), vec![9; 32]);
    deps.clock = Arc::new(sample_time);
    (deps, stores)
}

fn sample(name: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../../events/samples/apigw/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let json = std::fs::read_to_string(&path).unwrap();
    lambda_http::request::from_str(&json).unwrap()
}

#[tokio::test]
async fn every_sample_is_accepted() {
    let (deps, stores) = demo().await;
    for (file, provider, status) in [
        (
            "twilio-status.json",
            Provider::Twilio,
            CallStatus::Completed,
        ),
        ("plivo-status.json", Provider::Plivo, CallStatus::Completed),
        (
            "telnyx-status.json",
            Provider::Telnyx,
            CallStatus::Completed,
        ),
        (
            "exotel-status.json",
            Provider::Exotel,
            CallStatus::Completed,
        ),
    ] {
        let req = to_webhook_request(sample(file), None);
        assert_eq!(req.source_ip, Some("127.0.0.1".parse().unwrap()), "{file}");
        let resp = handle(req, &deps).await;
        assert_eq!(
            resp.status,
            200,
            "{file}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        let call_id = v["call_id"].as_str().unwrap().to_string();
        let call = stores
            .calls
            .get_call("demo", &call_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(call.provider, provider, "{file}");
        assert_eq!(call.state.status, status, "{file}");
    }
}

#[tokio::test]
async fn answer_universal_and_health_samples() {
    let (deps, _) = demo().await;
    let resp = handle(
        to_webhook_request(sample("twilio-answer.json"), None),
        &deps,
    )
    .await;
    assert_eq!(resp.status, 200);
    let xml = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(
        xml.contains("Please call back later.") && xml.contains("<Hangup"),
        "{xml}"
    );
    let resp = handle(
        to_webhook_request(sample("universal-status.json"), None),
        &deps,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let resp = handle(to_webhook_request(sample("healthz.json"), None), &deps).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn a_tampered_sample_is_refused() {
    let (deps, stores) = demo().await;
    let mut req = to_webhook_request(sample("twilio-status.json"), None);
    req.body = bytes::Bytes::from(String::from_utf8_lossy(&req.body).replace("completed", "busy"));
    assert_eq!(handle(req, &deps).await.status, 401);
    // Behind a custom domain the signed URL differs from the API Gateway one.
    let req = to_webhook_request(
        sample("twilio-status.json"),
        Some("https://hooks.example.test"),
    );
    assert_eq!(handle(req, &deps).await.status, 401);
    assert!(stores.calls.list_calls(None, 10).await.unwrap().is_empty());
}
