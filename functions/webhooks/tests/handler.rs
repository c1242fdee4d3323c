//! The webhook handler end to end over the embedded store: verification before anything,
//! idempotent replays, out-of-order delivery, outbox recovery, answer documents.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use vaani_events::{CallStatus, Provider};
use vaani_store::embedded::EmbeddedStore;
use vaani_store::{queues, MediaNode, ProviderCredentials, Stores, Tenant};
use vaani_telephony::WebhookRequest;
use vaani_webhooks::{handle, Deps};

const TOKEN: &str = "twilio-test-token";
const BASE: &str = "https://hooks.example.test";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

async fn setup() -> (Deps, Stores) {
    let stores = EmbeddedStore::open_in_memory()
        .unwrap()
        .with_clock(Arc::new(now))
        .stores();
    let mut credentials = std::collections::BTreeMap::new();
    credentials.insert(
        Provider::Twilio,
        ProviderCredentials {
            secret: TOKEN.into(),
            ..Default::default()
        },
    );
    credentials.insert(
        Provider::Exotel,
        ProviderCredentials {
            secret: "exo-token".into(),
            allow_cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
    );
    stores
        .tenants
        .put_tenant(&Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            fallback_message: "All agents are busy.".into(),
            credentials,
        })
        .await
        .unwrap();
    let mut deps = Deps::new(stores.clone(), b"media-key".to_vec());
    deps.clock = Arc::new(now);
    (deps, stores)
}

fn twilio_request(path: &str, params: &[(&str, &str)], token: &str) -> WebhookRequest {
    let url = format!("{BASE}{path}");
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = vaani_telephony::twilio::sign(&url, &owned, token);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    headers.insert("x-twilio-signature", sig.parse().unwrap());
    WebhookRequest {
        method: http::Method::POST,
        url,
        headers,
        body: body.into_bytes().into(),
        source_ip: Some("127.0.0.1".parse().unwrap()),
    }
}

fn status_params<'a>(status: &'a str, seq: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", "CA11111111111111111111111111111111"),
        ("CallStatus", status),
        ("Direction", "inbound"),
        ("From", "+919876543210"),
        ("To", "+918047491899"),
        ("SequenceNumber", seq),
        ("CallDuration", "42"),
    ]
}

async fn queued(stores: &Stores) -> Vec<vaani_events::CallEventEnvelope> {
    let msgs = stores
        .queue
        .receive(queues::CALL_EVENTS, 10, Duration::from_secs(60))
        .await
        .unwrap();
    msgs.iter()
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect()
}

#[tokio::test]
async fn replays_store_one_event_and_enqueue_once() {
    let (deps, stores) = setup().await;
    let req = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    let mut duplicates = 0;
    for _ in 0..5 {
        let resp = handle(req.clone(), &deps).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        if v["duplicate"] == true {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 4);
    let calls = stores.calls.list_calls(Some("acme"), 10).await.unwrap();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.state.status, CallStatus::Completed);
    assert_eq!(call.state.transitions, 1);
    assert_eq!(
        call.version, 1,
        "created with the event applied, never rewritten"
    );
    let events = stores
        .events
        .list_events("acme", &call.call_id)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].enqueued);
    let q = queued(&stores).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].call_id, call.call_id);
    assert_eq!(q[0].event.status, Some(CallStatus::Completed));
}

#[tokio::test]
async fn late_ringing_does_not_reopen_a_completed_call() {
    let (deps, stores) = setup().await;
    let done = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    let ringing = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("ringing", "1"),
        TOKEN,
    );
    assert_eq!(handle(done, &deps).await.status, 200);
    assert_eq!(handle(ringing, &deps).await.status, 200);
    let calls = stores.calls.list_calls(None, 10).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].state.status, CallStatus::Completed);
    assert_eq!(
        queued(&stores).await.len(),
        2,
        "both distinct events are queued"
    );
}

#[tokio::test]
async fn bad_signature_is_rejected_and_changes_nothing() {
    let (deps, stores) = setup().await;
    let req = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        "wrong-token",
    );
    let resp = handle(req, &deps).await;
    assert_eq!(resp.status, 401);
    let mut tampered = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    tampered.body =
        bytes::Bytes::from(String::from_utf8_lossy(&tampered.body).replace("42", "4200"));
    assert_eq!(handle(tampered, &deps).await.status, 401);
    let mut unsigned = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    unsigned.headers.remove("x-twilio-signature");
    assert_eq!(handle(unsigned, &deps).await.status, 401);
    assert!(stores.calls.list_calls(None, 10).await.unwrap().is_empty());
    assert!(queued(&stores).await.is_empty());
}

#[tokio::test]
async fn unknown_tenants_providers_and_paths() {
    let (deps, _) = setup().await;
    let req = twilio_request(
        "/v1/nobody/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    assert_eq!(handle(req, &deps).await.status, 404);
    let req = twilio_request(
        "/v1/acme/plivo/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    assert_eq!(
        handle(req, &deps).await.status,
        404,
        "tenant has no plivo credentials"
    );
    let req = twilio_request(
        "/v1/acme/twilio/nope",
        &status_params("completed", "3"),
        TOKEN,
    );
    assert_eq!(handle(req, &deps).await.status, 404);
}

#[tokio::test]
async fn exotel_from_outside_the_allowlist_is_forbidden() {
    let (deps, stores) = setup().await;
    let body = "CallSid=exo1&Status=completed&From=09876543210&To=08047491899";
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let req = WebhookRequest {
        method: http::Method::POST,
        url: format!("{BASE}/v1/acme/exotel/status?token=exo-token"),
        headers,
        body: body.as_bytes().to_vec().into(),
        source_ip: Some("192.0.2.7".parse().unwrap()),
    };
    assert_eq!(handle(req.clone(), &deps).await.status, 403);
    let inside = WebhookRequest {
        source_ip: Some("10.1.2.3".parse().unwrap()),
        ..req.clone()
    };
    assert_eq!(handle(inside, &deps).await.status, 200);
    let wrong_token = WebhookRequest {
        url: format!("{BASE}/v1/acme/exotel/status?token=guess"),
        source_ip: Some("10.1.2.3".parse().unwrap()),
        ..req
    };
    assert_eq!(handle(wrong_token, &deps).await.status, 401);
    assert_eq!(stores.calls.list_calls(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_stored_but_not_queued_is_queued_on_retry() {
    let (deps, stores) = setup().await;
    // Simulate a crash after the event was stored but before it reached the queue.
    let ev = vaani_telephony::parse(
        Provider::Twilio,
        Some("application/x-www-form-urlencoded"),
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(status_params("completed", "3"))
            .finish()
            .as_bytes(),
        None,
    )
    .unwrap();
    let call_id =
        vaani_webhooks::process::derived_call_id("acme", Provider::Twilio, &ev.provider_call_id);
    stores
        .events
        .put_event(&vaani_store::StoredEvent {
            tenant: "acme".into(),
            call_id,
            event_id: ev.dedupe_id(),
            received_at: now(),
            event: ev,
            enqueued: false,
            expires_at: None,
        })
        .await
        .unwrap();
    assert!(queued(&stores).await.is_empty());
    let req = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    assert_eq!(handle(req.clone(), &deps).await.status, 200);
    assert_eq!(handle(req, &deps).await.status, 200);
    assert_eq!(queued(&stores).await.len(), 1);
    let calls = stores.calls.list_calls(None, 10).await.unwrap();
    assert_eq!(calls[0].state.status, CallStatus::Completed);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let (deps, stores) = setup().await;
    let mut credentials = std::collections::BTreeMap::new();
    credentials.insert(
        Provider::Twilio,
        ProviderCredentials {
            secret: "beta-token".into(),
            ..Default::default()
        },
    );
    stores
        .tenants
        .put_tenant(&Tenant {
            id: "beta".into(),
            name: "Beta".into(),
            fallback_message: "Beta is busy.".into(),
            credentials,
        })
        .await
        .unwrap();
    // Acme's signature is worthless on Beta's endpoint.
    let forged = twilio_request(
        "/v1/beta/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    assert_eq!(handle(forged, &deps).await.status, 401);
    // The same provider call id under two tenants is two calls, each visible only to its tenant.
    let a = twilio_request(
        "/v1/acme/twilio/status",
        &status_params("completed", "3"),
        TOKEN,
    );
    let b = twilio_request(
        "/v1/beta/twilio/status",
        &status_params("ringing", "1"),
        "beta-token",
    );
    assert_eq!(handle(a, &deps).await.status, 200);
    assert_eq!(handle(b, &deps).await.status, 200);
    let acme = stores.calls.list_calls(Some("acme"), 10).await.unwrap();
    let beta = stores.calls.list_calls(Some("beta"), 10).await.unwrap();
    assert_eq!((acme.len(), beta.len()), (1, 1));
    assert_ne!(acme[0].call_id, beta[0].call_id);
    assert_eq!(acme[0].state.status, CallStatus::Completed);
    assert_eq!(beta[0].state.status, CallStatus::Ringing);
    assert!(stores
        .calls
        .get_call("beta", &acme[0].call_id)
        .await
        .unwrap()
        .is_none());
    assert!(stores
        .events
        .list_events("beta", &acme[0].call_id)
        .await
        .unwrap()
        .is_empty());
}

fn node(id: &str, capacity: u32, active: u32, draining: bool) -> MediaNode {
    MediaNode {
        id: id.into(),
        sip_uri: format!("sip:media@{id}.nodes.example.test:5060"),
        ws_url: format!("wss://{id}.nodes.example.test/stream"),
        capacity,
        active_calls: active,
        draining,
        last_heartbeat: now(),
        expires_at: now() + chrono::Duration::seconds(60),
    }
}

#[tokio::test]
async fn answer_connects_to_the_freest_live_node() {
    let (deps, stores) = setup().await;
    stores
        .nodes
        .heartbeat(&node("n1", 100, 90, false))
        .await
        .unwrap();
    stores
        .nodes
        .heartbeat(&node("n2", 100, 10, true))
        .await
        .unwrap();
    stores
        .nodes
        .heartbeat(&node("n3", 100, 40, false))
        .await
        .unwrap();
    let req = twilio_request(
        "/v1/acme/twilio/answer",
        &status_params("ringing", "1"),
        TOKEN,
    );
    let resp = handle(req, &deps).await;
    assert_eq!(resp.status, 200);
    let xml = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(xml.contains("<Connect>"), "{xml}");
    assert!(
        xml.contains("wss://n3.nodes.example.test/stream/acme/twilio"),
        "{xml}"
    );
    assert!(xml.contains("vaani_call_id"), "{xml}");
    let calls = stores.calls.list_calls(None, 10).await.unwrap();
    assert_eq!(calls[0].node_id.as_deref(), Some("n3"));
    assert_eq!(calls[0].state.status, CallStatus::Ringing);
    // The token in the document is valid for this call.
    let token = xml
        .split("name=\"vaani_token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    vaani_core::token::verify(b"media-key", token, "acme", &calls[0].call_id, now()).unwrap();
}

#[tokio::test]
async fn answer_without_a_node_plays_the_fallback_and_hangs_up() {
    let (deps, _) = setup().await;
    let req = twilio_request(
        "/v1/acme/twilio/answer",
        &status_params("ringing", "1"),
        TOKEN,
    );
    let resp = handle(req, &deps).await;
    assert_eq!(resp.status, 200);
    let xml = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(xml.contains("All agents are busy."), "{xml}");
    assert!(xml.contains("<Hangup"), "{xml}");
}

#[tokio::test]
async fn universal_endpoint_detects_the_provider() {
    let (deps, stores) = setup().await;
    let req = twilio_request("/v1/acme/status", &status_params("in-progress", "2"), TOKEN);
    let resp = handle(req, &deps).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let calls = stores.calls.list_calls(None, 10).await.unwrap();
    assert_eq!(calls[0].provider, Provider::Twilio);
    assert_eq!(calls[0].state.status, CallStatus::InProgress);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn arb_path() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/v1/acme/twilio/status".to_string()),
            Just("/v1/acme/twilio/answer".to_string()),
            Just("/v1/acme/status".to_string()),
            Just("/v1/acme/exotel/status?token=exo-token".to_string()),
            "/[a-z0-9/%?=&._-]{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever arrives, the handler answers with a status and never panics; nothing
        /// unverified is stored.
        #[test]
        fn arbitrary_requests_get_an_answer(
            path in arb_path(),
            body in prop::collection::vec(any::<u8>(), 0..512),
            ct in prop_oneof![Just("application/x-www-form-urlencoded"), Just("application/json"), Just("text/xml"), Just("")],
            sig in "[A-Za-z0-9+/=]{0,40}",
            method in prop_oneof![Just(http::Method::POST), Just(http::Method::GET), Just(http::Method::PUT)],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (deps, stores) = setup().await;
                let mut headers = http::HeaderMap::new();
                if !ct.is_empty() {
                    headers.insert("content-type", ct.parse().unwrap());
                }
                headers.insert("x-twilio-signature", sig.parse().unwrap());
                let req = WebhookRequest {
                    method,
                    url: format!("{BASE}{path}"),
                    headers,
                    body: body.into(),
                    source_ip: Some("10.0.0.1".parse().unwrap()),
                };
                let resp = handle(req, &deps).await;
                assert!((200..600).contains(&resp.status));
                if resp.status != 200 {
                    assert!(stores.calls.list_calls(None, 10).await.unwrap().is_empty());
                }
            });
        }
    }
}
