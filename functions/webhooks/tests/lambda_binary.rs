//! End to end: the real `webhooks` Lambda binary, started as a process against a local
//! emulation of the Lambda Runtime API (2018-06-01) and DynamoDB + SQS in moto, fed the
//! API Gateway sample events in `events/samples/apigw/`.
//!
//! Needs a moto server: `VAANI_TEST_MOTO_URL=$(scripts/moto.sh)`. Without it the test prints a
//! skip line and passes, unless `VAANI_REQUIRE_MOTO=1`, which makes it fail. Each run gets its
//! own table and queues.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "lambda")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;
use vaani_events::{CallEventEnvelope, CallStatus, Provider};
use vaani_store::aws::{self, AwsConfig, AwsStore, QueueSpec};
use vaani_store::queues::{CALL_EVENTS, CALL_EVENTS_DLQ};
use vaani_store::{MediaNode, ProviderCredentials, Stores, Tenant};

/// Every wait in this test gives up after this long.
const WAIT: Duration = Duration::from_secs(30);
const FUNCTION_ARN: &str = "arn:aws:lambda:ap-south-1:123456789012:function:vaani-webhooks";

const TWILIO_TOKEN: &str = "demo-twilio-token";
const PLIVO_TOKEN: &str = "demo-plivo-token";
const EXOTEL_KEY: &str = "demo-key";
const EXOTEL_TOKEN: &str = "demo-exotel-token";
const TELNYX_PUBLIC_KEY: &str = "SNPY3IqQsHlOjDYALDxfUGgndehneauP6UhKXzQ0X54=";
const FALLBACK: &str = "Please call back later.";
/// `CallSid` of `twilio-status.json` and `twilio-answer.json` (the same call).
const TWILIO_CALL_SID: &str = "CA11111111111111111111111111111111";

fn moto_url() -> Option<String> {
    match std::env::var("VAANI_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("VAANI_REQUIRE_MOTO").as_deref() != Ok("1"),
                "VAANI_REQUIRE_MOTO=1 but VAANI_TEST_MOTO_URL is unset (start moto with scripts/moto.sh)"
            );
            eprintln!(
                "skip: webhooks Lambda binary test (set VAANI_TEST_MOTO_URL, see scripts/moto.sh)"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lambda Runtime API emulation

/// What the function reported for an invocation (or its init).
#[derive(Debug)]
enum Outcome {
    Response { id: String, body: Bytes },
    Error { path: String, body: String },
}

#[derive(Clone)]
struct RuntimeApi {
    /// Queued invocations: (request id, event JSON).
    next: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, String)>>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

/// `GET /runtime/invocation/next`: long-polls until an invocation is queued.
async fn next_invocation(State(api): State<RuntimeApi>) -> axum::response::Response {
    let Some((id, event)) = api.next.lock().await.recv().await else {
        // The test is over; keep the runtime waiting rather than failing it.
        return std::future::pending().await;
    };
    let deadline = Utc::now().timestamp_millis() + 30_000;
    let trace = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        Utc::now().timestamp(),
        &uuid::Uuid::new_v4().simple().to_string()[..24],
        &uuid::Uuid::new_v4().simple().to_string()[..16],
    );
    let mut headers = HeaderMap::new();
    headers.insert("Lambda-Runtime-Aws-Request-Id", id.parse().unwrap());
    headers.insert(
        "Lambda-Runtime-Deadline-Ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        FUNCTION_ARN.parse().unwrap(),
    );
    headers.insert("Lambda-Runtime-Trace-Id", trace.parse().unwrap());
    headers.insert("Content-Type", "application/json".parse().unwrap());
    (StatusCode::OK, headers, event).into_response()
}

async fn invocation_response(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let _ = api.outcomes.send(Outcome::Response { id, body });
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let kind = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let _ = api.outcomes.send(Outcome::Error {
        path: format!("invocation/{id}/error ({kind})"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(api): State<RuntimeApi>, body: Bytes) -> StatusCode {
    let _ = api.outcomes.send(Outcome::Error {
        path: "init/error".into(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::ACCEPTED
}

async fn unexpected(State(api): State<RuntimeApi>, uri: axum::http::Uri) -> StatusCode {
    let _ = api.outcomes.send(Outcome::Error {
        path: format!("unexpected request {uri}"),
        body: String::new(),
    });
    StatusCode::NOT_FOUND
}

/// Serve the Runtime API on 127.0.0.1:0; returns its `host:port` and the test's ends.
async fn start_runtime_api() -> (
    String,
    mpsc::UnboundedSender<(String, String)>,
    mpsc::UnboundedReceiver<Outcome>,
) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
    let api = RuntimeApi {
        next: Arc::new(tokio::sync::Mutex::new(events_rx)),
        outcomes: outcomes_tx,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(unexpected)
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr.to_string(), events_tx, outcomes_rx)
}

// ---------------------------------------------------------------------------------------------
// The binary

/// Kills the function process when the test ends, passed or failed.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the process wrote, stdout and stderr apart.
#[derive(Clone, Default)]
struct Logs {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Logs {
    fn text(&self) -> (String, String) {
        (
            String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        )
    }

    fn dump(&self) -> String {
        let (out, err) = self.text();
        format!("--- function stdout ---\n{out}\n--- function stderr ---\n{err}")
    }
}

fn drain(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

struct Function {
    child: Option<ChildGuard>,
    readers: Vec<std::thread::JoinHandle<()>>,
    logs: Logs,
    invocations: mpsc::UnboundedSender<(String, String)>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    invoked: usize,
}

/// An API Gateway v2 response as the function returned it, body decoded.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    content_type: String,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.body))
    }
}

impl Function {
    fn spawn(
        runtime_api: &str,
        cfg: &AwsConfig,
        moto: &str,
        media_key: &str,
    ) -> (ChildGuard, Logs, Vec<std::thread::JoinHandle<()>>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhooks"));
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "vaani-webhooks")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/15/[$LATEST]e2e")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/vaani-webhooks")
            .env("AWS_REGION", "ap-south-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("VAANI_TABLE", &cfg.table)
            .env("VAANI_CALL_EVENTS_QUEUE_URL", &cfg.queue_urls[CALL_EVENTS])
            .env(
                "VAANI_CALL_EVENTS_DLQ_URL",
                &cfg.queue_urls[CALL_EVENTS_DLQ],
            )
            .env("VAANI_MEDIA_TOKEN_KEY", media_key)
            .env("VAANI_AWS_ENDPOINT_URL", moto)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the webhooks binary");
        let logs = Logs::default();
        let readers = vec![
            drain(child.stdout.take().unwrap(), logs.stdout.clone()),
            drain(child.stderr.take().unwrap(), logs.stderr.clone()),
        ];
        (ChildGuard(child), logs, readers)
    }

    /// Invoke the function with one API Gateway event and wait for its response.
    async fn invoke(&mut self, what: &str, event: &Value) -> HttpResponse {
        let id = uuid::Uuid::new_v4().to_string();
        self.invoked += 1;
        self.invocations
            .send((id.clone(), event.to_string()))
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.0.try_wait().unwrap()) {
                panic!(
                    "{what}: the function exited ({status})\n{}",
                    self.logs.dump()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no response from the function within {WAIT:?}\n{}",
                self.logs.dump()
            );
            let outcome = match tokio::time::timeout(
                Duration::from_millis(100),
                self.outcomes.recv(),
            )
            .await
            {
                Err(_) => continue,
                Ok(None) => panic!("{what}: runtime API server stopped"),
                Ok(Some(o)) => o,
            };
            match outcome {
                Outcome::Response { id: got, body } => {
                    assert_eq!(got, id, "{what}: response for another invocation");
                    return decode_response(what, &body);
                }
                Outcome::Error { path, body } => panic!(
                    "{what}: the function reported an error on {path}: {body}\n{}",
                    self.logs.dump()
                ),
            }
        }
    }

    /// Stop the process and return everything it logged.
    fn stop(&mut self) -> (String, String) {
        drop(self.child.take());
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        self.logs.text()
    }
}

fn decode_response(what: &str, raw: &[u8]) -> HttpResponse {
    let v: Value = serde_json::from_slice(raw).unwrap_or_else(|e| {
        panic!(
            "{what}: response is not JSON ({e}): {}",
            String::from_utf8_lossy(raw)
        )
    });
    let status = v["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: no statusCode in {v}"));
    let body = v["body"].as_str().unwrap_or_default();
    let body = if v["isBase64Encoded"].as_bool() == Some(true) {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_string()
    };
    let content_type = v["headers"]
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .and_then(|(_, v)| v.as_str())
        })
        .unwrap_or_default()
        .to_string();
    HttpResponse {
        status: u16::try_from(status).unwrap(),
        content_type,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Samples and store

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/samples/apigw/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `event` with its (base64, form-encoded) body changed by `edit`, signature left as it was.
fn tampered(mut event: Value, edit: impl Fn(&str, &str) -> String) -> Value {
    assert_eq!(event["isBase64Encoded"], Value::Bool(true));
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.decode(event["body"].as_str().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| {
            let v = edit(&k, &v);
            (k.into_owned(), v)
        })
        .collect();
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        ser.append_pair(k, v);
    }
    let new_body = ser.finish();
    assert_ne!(
        new_body.as_bytes(),
        body.as_slice(),
        "tampering changed nothing"
    );
    event["body"] = Value::String(b64.encode(new_body.as_bytes()));
    event
}

async fn put_demo_tenant(stores: &Stores) {
    let c = |secret: &str| ProviderCredentials {
        secret: secret.into(),
        ..Default::default()
    };
    let mut credentials = BTreeMap::new();
    credentials.insert(Provider::Twilio, c(TWILIO_TOKEN));
    credentials.insert(Provider::Plivo, c(PLIVO_TOKEN));
    credentials.insert(Provider::Telnyx, c(TELNYX_PUBLIC_KEY));
    credentials.insert(
        Provider::Exotel,
        ProviderCredentials {
            api_key: Some(EXOTEL_KEY.into()),
            ..c(EXOTEL_TOKEN)
        },
    );
    stores
        .tenants
        .put_tenant(&Tenant {
            id: "demo".into(),
            name: "Demo".into(),
            fallback_message: FALLBACK.into(),
            credentials,
        })
        .await
        .unwrap();
}

/// Receive and delete every message on `queue` (FIFO: a group with messages in flight
/// delivers nothing more, so each batch is deleted before the next receive).
async fn drain_queue(stores: &Stores, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "draining {queue} took over {WAIT:?}"
        );
        let batch = stores
            .queue
            .receive(queue, 10, Duration::from_secs(30))
            .await
            .unwrap();
        if batch.is_empty() {
            return bodies;
        }
        for m in batch {
            stores.queue.delete(queue, &m.receipt).await.unwrap();
            bodies.push(m.body);
        }
    }
}

fn status_ok(what: &str, r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(r.content_type, "application/json", "{what}");
    let v = r.json();
    assert_eq!(v["ok"], Value::Bool(true), "{what}: {v}");
    assert!(
        v["call_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: {v}"
    );
    assert!(
        v["event_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: {v}"
    );
    v
}

fn rejected(what: &str, r: &HttpResponse, code: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    assert_eq!(
        r.json()["error"],
        Value::String(code.into()),
        "{what}: {r:?}"
    );
}

/// The value of `<Parameter name="{name}" value="…"/>` in TwiML.
fn twiml_parameter(xml: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = xml
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} parameter in {xml}"))
        + marker.len();
    let len = xml[start..].find('"').unwrap();
    xml[start..start + len].to_string()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_binary_end_to_end() {
    let Some(moto) = moto_url() else { return };
    let started = Instant::now();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let cfg = aws::ensure_schema(
        &AwsConfig::local(&moto, &format!("vaani-e2e-{suffix}")),
        &QueueSpec::call_events(&format!("-e2e-{suffix}"), 3),
    )
    .await
    .unwrap();
    let stores = AwsStore::connect(&cfg).await.stores();
    put_demo_tenant(&stores).await;

    let media_key = format!("e2e-media-token-key-{}", uuid::Uuid::new_v4().simple());
    let (runtime_api, invocations, outcomes) = start_runtime_api().await;
    let (child, logs, readers) = Function::spawn(&runtime_api, &cfg, &moto, &media_key);
    let mut f = Function {
        child: Some(child),
        readers,
        logs,
        invocations,
        outcomes,
        invoked: 0,
    };

    // Answer webhook (ringing) with no media node registered: the tenant's fallback.
    let r = f
        .invoke("twilio-answer (no node)", &sample("twilio-answer.json"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, "application/xml");
    assert!(
        r.body.contains(FALLBACK) && r.body.contains("<Hangup/>") && !r.body.contains("<Connect"),
        "{}",
        r.body
    );

    // A live media node: the provider's retry of the same answer webhook now streams to it.
    let node = MediaNode {
        id: format!("node-e2e-{suffix}"),
        sip_uri: "sip:media-e2e.example.test:5060".into(),
        ws_url: "wss://media-e2e.example.test/media".into(),
        capacity: 10,
        active_calls: 0,
        draining: false,
        last_heartbeat: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::seconds(60),
    };
    stores.nodes.heartbeat(&node).await.unwrap();
    let r = f
        .invoke("twilio-answer (node live)", &sample("twilio-answer.json"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, "application/xml");
    assert!(
        r.body
            .contains("<Connect><Stream url=\"wss://media-e2e.example.test/media/demo/twilio\">")
            && !r.body.contains("<Hangup"),
        "{}",
        r.body
    );
    let media_token = twiml_parameter(&r.body, vaani_core::answer::TOKEN_PARAM);
    let answered_call = twiml_parameter(&r.body, vaani_core::answer::CALL_ID_PARAM);
    assert!(media_token.len() >= 16, "{media_token}");

    // Status callback (completed), then the provider's retry of it.
    let r = f
        .invoke("twilio-status", &sample("twilio-status.json"))
        .await;
    let twilio = status_ok("twilio-status", &r);
    assert_eq!(twilio["duplicate"], Value::Bool(false), "{twilio}");
    assert_eq!(twilio["status"], "completed", "{twilio}");
    assert_eq!(twilio["call_id"], answered_call.as_str(), "{twilio}");
    let r = f
        .invoke("twilio-status (retry)", &sample("twilio-status.json"))
        .await;
    let retry = status_ok("twilio-status (retry)", &r);
    assert_eq!(retry["duplicate"], Value::Bool(true), "{retry}");
    assert_eq!(retry["event_id"], twilio["event_id"]);
    assert_eq!(retry["call_id"], twilio["call_id"]);

    let r = f.invoke("plivo-status", &sample("plivo-status.json")).await;
    let plivo = status_ok("plivo-status", &r);
    assert_eq!(plivo["duplicate"], Value::Bool(false), "{plivo}");
    let r = f
        .invoke("exotel-status", &sample("exotel-status.json"))
        .await;
    let exotel = status_ok("exotel-status", &r);
    assert_eq!(exotel["duplicate"], Value::Bool(false), "{exotel}");

    // The Telnyx sample is signed for 2026-01-15T10:30:00Z: outside the replay window now.
    let r = f
        .invoke("telnyx-status (stale)", &sample("telnyx-status.json"))
        .await;
    rejected("telnyx-status (stale)", &r, "stale_timestamp");

    // Tampered Twilio bodies keep their signature: refused, and nothing is stored.
    let r = f
        .invoke(
            "twilio-status (CallDuration changed)",
            &tampered(sample("twilio-status.json"), |k, v| {
                if k == "CallDuration" {
                    "4242".into()
                } else {
                    v.into()
                }
            }),
        )
        .await;
    rejected("tampered CallDuration", &r, "bad_signature");
    let forged_sid = "CA22222222222222222222222222222222";
    let r = f
        .invoke(
            "twilio-status (CallSid changed)",
            &tampered(sample("twilio-status.json"), |k, v| {
                if k == "CallSid" {
                    forged_sid.into()
                } else {
                    v.into()
                }
            }),
        )
        .await;
    rejected("tampered CallSid", &r, "bad_signature");

    let r = f.invoke("healthz", &sample("healthz.json")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "ok");

    let (invocations, invoked) = (f.invoked, started.elapsed());
    let (stdout, stderr) = f.stop();

    // ---- What the function left in DynamoDB ----
    let calls = stores.calls.list_calls(Some("demo"), 50).await.unwrap();
    let providers: BTreeSet<Provider> = calls.iter().map(|c| c.provider).collect();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(
        providers,
        BTreeSet::from([Provider::Twilio, Provider::Plivo, Provider::Exotel])
    );
    for c in &calls {
        assert_eq!(c.state.status, CallStatus::Completed, "{c:#?}");
    }
    let twilio_call = stores
        .calls
        .find_call_by_provider_id("demo", Provider::Twilio, TWILIO_CALL_SID)
        .await
        .unwrap()
        .expect("the Twilio call");
    assert_eq!(twilio_call.call_id, answered_call);
    assert_eq!(twilio_call.node_id.as_deref(), Some(node.id.as_str()));
    for (v, provider) in [(&plivo, Provider::Plivo), (&exotel, Provider::Exotel)] {
        let c = stores
            .calls
            .get_call("demo", v["call_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no stored call for {v}"));
        assert_eq!(c.provider, provider);
        assert_eq!(c.node_id, None);
    }
    assert!(stores
        .calls
        .find_call_by_provider_id("demo", Provider::Twilio, forged_sid)
        .await
        .unwrap()
        .is_none());

    // Ringing (answer, sent twice) and completed (status, sent twice): one stored event each.
    let twilio_events = stores
        .events
        .list_events("demo", &answered_call)
        .await
        .unwrap();
    assert_eq!(twilio_events.len(), 2, "{twilio_events:#?}");
    assert_eq!(
        twilio_events
            .iter()
            .filter(|e| e.event_id == twilio["event_id"].as_str().unwrap())
            .count(),
        1
    );
    let mut stored = BTreeMap::new();
    for c in &calls {
        for e in stores.events.list_events("demo", &c.call_id).await.unwrap() {
            assert!(e.enqueued, "event not flagged enqueued: {e:#?}");
            stored.insert(e.event_id.clone(), e.call_id.clone());
        }
    }
    assert_eq!(stored.len(), 4, "{stored:#?}");

    // ---- And on the call-events queue: one message per distinct accepted event ----
    let bodies = drain_queue(&stores, CALL_EVENTS).await;
    let mut queued = BTreeMap::new();
    for b in &bodies {
        let env: CallEventEnvelope = serde_json::from_str(b).unwrap();
        assert_eq!(env.tenant, "demo");
        assert!(
            queued
                .insert(env.event_id.clone(), env.call_id.clone())
                .is_none(),
            "event {} queued twice",
            env.event_id
        );
    }
    assert_eq!(bodies.len(), 4, "{bodies:#?}");
    assert_eq!(queued, stored);
    assert!(drain_queue(&stores, CALL_EVENTS_DLQ).await.is_empty());

    // ---- Logs: JSON, informative, and free of secrets and whole phone numbers ----
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}")))
        .collect();
    let has = |msg: &str, field: &str, value: &str| {
        lines
            .iter()
            .any(|l| l["fields"]["message"] == msg && l["fields"][field].as_str() == Some(value))
    };
    let all = format!("{stdout}\n{stderr}");
    assert!(
        has("webhook rejected", "code", "stale_timestamp")
            && has("webhook rejected", "code", "bad_signature")
            && has(
                "webhook rejected",
                "from",
                &vaani_core::phone::mask("+919876543210")
            )
            && has("call routed to media node", "node", &node.id)
            && all.contains("no media node available; fallback"),
        "expected log lines missing\n{}",
        f.logs.dump()
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{EXOTEL_KEY}:{EXOTEL_TOKEN}"));
    for secret in [
        TWILIO_TOKEN,
        PLIVO_TOKEN,
        EXOTEL_TOKEN,
        basic.as_str(),
        media_key.as_str(),
        media_token.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret is in the logs:\n{all}");
    }
    // The samples' caller and callee, in any format (E.164, national, with trunk prefix).
    for digits in ["9876543210", "8047491899"] {
        assert!(
            !all.contains(digits),
            "an unmasked phone number ({digits}) is in the logs:\n{all}"
        );
    }
    eprintln!(
        "lambda binary e2e: {invocations} invocations in {invoked:?} (schema and cold start \
         included), {:?} in all",
        started.elapsed()
    );
}
