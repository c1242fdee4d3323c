//! Verify + parse + store, per provider: one status webhook through the full handler
//! (`vaani_webhooks::handle`) on the embedded store, on one thread. Every iteration is a
//! distinct call, so nothing is short-circuited as a duplicate. Webhooks/s per core is
//! `1 / time per iteration`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vaani_events::Provider;
use vaani_store::embedded::EmbeddedStore;
use vaani_store::{ProviderCredentials, Tenant};
use vaani_telephony::WebhookRequest;
use vaani_webhooks::{handle, Deps};

const BASE: &str = "https://hooks.example.test";
const TELNYX_SEED: [u8; 32] = [7; 32];

fn secret(p: Provider) -> String {
    match p {
        Provider::Telnyx => {
            let key = ed25519_dalek::SigningKey::from_bytes(&TELNYX_SEED);
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
        }
        _ => format!("{p}-bench-token"),
    }
}

fn signing_secret(p: Provider) -> String {
    match p {
        Provider::Telnyx => base64::engine::general_purpose::STANDARD.encode(TELNYX_SEED),
        _ => secret(p),
    }
}

fn body(p: Provider, n: u64) -> (String, &'static str, String) {
    let path = format!("/v1/bench/{p}/status");
    // A different caller each time (valid Indian mobiles), so number parsing is not all cache hits.
    let caller = n % 100_000;
    match p {
        Provider::Twilio | Provider::Signalwire => (
            path,
            "application/x-www-form-urlencoded",
            format!("AccountSid=AC0123&CallSid=CA{n:032}&CallStatus=completed&Direction=inbound&From=%2B9198765{caller:05}&To=%2B918047491899&CallDuration=61&Duration=2&SequenceNumber=3&Timestamp=Wed%2C%2001%20Jan%202025%2010%3A00%3A00%20%2B0000"),
        ),
        Provider::Plivo => (
            path,
            "application/x-www-form-urlencoded",
            format!("CallUUID=0d6c9a4e-{n:012}&CallStatus=completed&Direction=inbound&From=9198765{caller:05}&To=918047491899&Duration=61&BillDuration=120&HangupCause=NORMAL_CLEARING&EndTime=2025-01-01+15%3A31%3A01"),
        ),
        Provider::Exotel => (
            format!("{path}?token={}", secret(p)),
            "application/x-www-form-urlencoded",
            format!("CallSid=exo{n}&Status=completed&Direction=inbound&From=098765{caller:05}&To=08047491899&ConversationDuration=61&DateUpdated=2025-01-01+15%3A31%3A01"),
        ),
        Provider::Telnyx => (
            path,
            "application/json",
            format!(r#"{{"data":{{"event_type":"call.hangup","id":"ev-{n}","occurred_at":"2025-01-01T10:01:01Z","payload":{{"call_control_id":"v3:{n}","call_leg_id":"leg-{n}","call_session_id":"s-{n}","from":"+9198765{caller:05}","to":"+918047491899","direction":"incoming","state":"hangup","hangup_cause":"normal_clearing","start_time":"2025-01-01T10:00:00Z","end_time":"2025-01-01T10:01:01Z"}},"record_type":"event"}},"meta":{{"attempt":1,"delivered_to":"{BASE}/hook"}}}}"#),
        ),
    }
}

fn request(p: Provider, n: u64, now: chrono::DateTime<chrono::Utc>) -> WebhookRequest {
    let (path, ct, body) = body(p, n);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    let mut req = WebhookRequest {
        method: http::Method::POST,
        url: format!("{BASE}{path}"),
        headers,
        body: body.into_bytes().into(),
        source_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let signed = vaani_telephony::sign_headers(p, &signing_secret(p), &req, None, now)
        .unwrap_or_else(|e| panic!("signing: {e}"));
    for (k, v) in signed {
        let k = http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let v = http::HeaderValue::from_str(&v).unwrap_or_else(|e| panic!("{e}"));
        req.headers.insert(k, v);
    }
    req
}

/// Handle `reqs` in waves of `IN_FLIGHT` concurrent requests on this (single) thread, as a
/// busy server sees them: requests that finish together share one store commit.
async fn handle_all(mut reqs: Vec<WebhookRequest>, deps: &Deps) {
    while !reqs.is_empty() {
        let wave: Vec<WebhookRequest> = reqs.drain(..IN_FLIGHT.min(reqs.len())).collect();
        for resp in futures::future::join_all(wave.into_iter().map(|r| handle(r, deps))).await {
            assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        }
    }
}

/// Concurrent webhooks per core (a modest load for one Lambda/dev process).
const IN_FLIGHT: usize = 32;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = if std::env::var_os("BENCH_MEM").is_some() {
        EmbeddedStore::open_in_memory()
    } else {
        EmbeddedStore::open(dir.path())
    };
    let stores = store.unwrap_or_else(|e| panic!("store: {e}")).stores();
    let credentials = Provider::ALL
        .into_iter()
        .map(|p| {
            (
                p,
                ProviderCredentials {
                    secret: secret(p),
                    ..Default::default()
                },
            )
        })
        .collect();
    rt.block_on(stores.tenants.put_tenant(&Tenant {
        id: "bench".into(),
        name: "Bench".into(),
        fallback_message: "busy".into(),
        credentials,
    }))
    .unwrap_or_else(|e| panic!("tenant: {e}"));
    let deps = Deps::new(stores, vec![1; 32]);
    let now = chrono::Utc::now();
    let counter = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("webhook_verify_parse_store");
    group.throughput(Throughput::Elements(1));
    for p in Provider::ALL {
        // Requests are made (signed) up front, untimed; the timed loop handles them back to
        // back, as a busy Lambda or `vaani dev` would.
        group.bench_function(p.as_str(), |b| {
            b.iter_custom(|iters| {
                let reqs: Vec<WebhookRequest> = (0..iters)
                    .map(|_| request(p, counter.fetch_add(1, Ordering::Relaxed), now))
                    .collect();
                let started = std::time::Instant::now();
                rt.block_on(handle_all(reqs, &deps));
                started.elapsed()
            })
        });
    }
    group.finish();

    // Where the time goes, for one provider: each stage alone on the same requests.
    let mut parts = c.benchmark_group("webhook_stages_twilio");
    parts.throughput(Throughput::Elements(1));
    let p = Provider::Twilio;
    let mut cfg = vaani_telephony::VerifyConfig::new(secret(p), now);
    cfg.replay_window = std::time::Duration::from_secs(300);
    parts.bench_function("verify", |b| {
        b.iter_batched(
            || request(p, counter.fetch_add(1, Ordering::Relaxed), now),
            |req| vaani_telephony::verify(p, &req, &cfg).map_err(|e| panic!("{e}")),
            BatchSize::SmallInput,
        )
    });
    parts.bench_function("parse", |b| {
        b.iter_batched(
            || request(p, counter.fetch_add(1, Ordering::Relaxed), now),
            |req| {
                vaani_telephony::parse(p, req.content_type(), &req.body, req.query())
                    .map_err(|e| panic!("{e}"))
            },
            BatchSize::SmallInput,
        )
    });
    parts.bench_function("store", |b| {
        b.iter_batched(
            || {
                let req = request(p, counter.fetch_add(1, Ordering::Relaxed), now);
                vaani_telephony::parse(p, req.content_type(), &req.body, req.query())
                    .unwrap_or_else(|e| panic!("{e}"))
            },
            |ev| {
                rt.block_on(vaani_webhooks::process_event("bench", ev, &deps))
                    .map_err(|e| panic!("{e}"))
            },
            BatchSize::SmallInput,
        )
    });
    parts.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
