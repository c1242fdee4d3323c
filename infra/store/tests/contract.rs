//! One contract suite, run against every adapter: the embedded SQLite store always, and the
//! DynamoDB + SQS store against moto when `VAANI_TEST_MOTO_URL` is set (each test gets its own
//! table and queues). Without it the AWS tests print a skip line and pass, unless
//! `VAANI_REQUIRE_MOTO=1`, which makes them fail.
//!
//! Time: TTLs run on an injected clock that tests move forward; SQS visibility timeouts run in
//! real time on moto (so those tests wait 1–2 s there) and on the same virtual clock embedded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use vaani_core::CallState;
use vaani_events::{CallEvent, CallStatus, Provider};
#[cfg(feature = "aws")]
use vaani_store::aws::{self, AwsConfig, AwsStore, QueueSpec};
use vaani_store::embedded::EmbeddedStore;
use vaani_store::queues::{CALL_EVENTS, CALL_EVENTS_DLQ};
use vaani_store::{
    CallRecord, Clock, MediaNode, ProviderCredentials, PutOutcome, StoreError, StoredEvent,
    StoredReport, Stores, Tenant,
};

/// Receives before redrive, in every test environment (embedded and moto).
const MAX_RECEIVES: u32 = 2;

struct Env {
    s: Stores,
    offset: Arc<Mutex<chrono::Duration>>,
    /// SQS visibility timeouts only pass in real time.
    real_queue_time: bool,
}

impl Env {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap()
    }

    /// Move the store's clock (TTL; embedded queue visibility too).
    fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap() += chrono::Duration::from_std(d).unwrap();
    }

    /// Let `d` pass for queue visibility timeouts.
    async fn wait_visibility(&self, d: Duration) {
        if self.real_queue_time {
            tokio::time::sleep(d).await;
        } else {
            self.advance(d);
        }
    }
}

fn clock(offset: &Arc<Mutex<chrono::Duration>>) -> Clock {
    let offset = offset.clone();
    Arc::new(move || Utc::now() + *offset.lock().unwrap())
}

fn embedded_env() -> Env {
    let offset = Arc::new(Mutex::new(chrono::Duration::zero()));
    let store = EmbeddedStore::open_in_memory()
        .unwrap()
        .with_clock(clock(&offset));
    store
        .configure_queue(CALL_EVENTS, Some((CALL_EVENTS_DLQ, MAX_RECEIVES)))
        .unwrap();
    Env {
        s: store.stores(),
        offset,
        real_queue_time: false,
    }
}

#[cfg(feature = "aws")]
static AWS_ENV: std::sync::Once = std::sync::Once::new();

#[cfg(feature = "aws")]
fn moto_url() -> Option<String> {
    AWS_ENV.call_once(|| {
        // Belt and braces: the moto clients never run the default credential chain, but nothing
        // in a test process may ever probe the EC2 metadata address.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
    assert_eq!(
        std::env::var("AWS_EC2_METADATA_DISABLED").as_deref(),
        Ok("true")
    );
    match std::env::var("VAANI_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("VAANI_REQUIRE_MOTO").as_deref() != Ok("1"),
                "VAANI_REQUIRE_MOTO=1 but VAANI_TEST_MOTO_URL is unset (start moto with scripts/moto.sh)"
            );
            eprintln!("skip: aws adapter test (set VAANI_TEST_MOTO_URL, see scripts/moto.sh)");
            None
        }
    }
}

#[cfg(feature = "aws")]
fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(feature = "aws")]
async fn aws_config() -> Option<AwsConfig> {
    let url = moto_url()?;
    let suffix = unique_suffix();
    let cfg = AwsConfig::local(&url, &format!("vaani-test-{suffix}"));
    Some(
        aws::ensure_schema(
            &cfg,
            &QueueSpec::call_events(&format!("-{suffix}"), MAX_RECEIVES),
        )
        .await
        .unwrap(),
    )
}

#[cfg(feature = "aws")]
async fn aws_env() -> Option<Env> {
    let cfg = aws_config().await?;
    let offset = Arc::new(Mutex::new(chrono::Duration::zero()));
    let store = AwsStore::connect(&cfg).await.with_clock(clock(&offset));
    Some(Env {
        s: store.stores(),
        offset,
        real_queue_time: true,
    })
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded_adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let env = super::embedded_env();
                    super::$name(&env).await;
                }
            )*
        }
        #[cfg(feature = "aws")]
        mod aws_adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(env) = super::aws_env().await else { return };
                    super::$name(&env).await;
                }
            )*
        }
    };
}

contract!(
    calls_conditional_create,
    calls_cas_update,
    calls_find_by_provider_id,
    calls_list_newest_first,
    events_dedupe_and_enqueued_flag,
    events_ttl_invisible_and_replaceable,
    tenants_round_trip_with_credentials,
    reports_by_either_id_with_ttl,
    nodes_heartbeat_list_expiry_remove,
    counters_atomic_under_concurrency,
    queue_send_receive_delete,
    queue_visibility_timeout_redelivers,
    queue_dedupe_id_drops_second_send,
    queue_redrive_to_dlq,
    queue_fifo_groups_per_call,
    queue_purge,
    queue_unknown_name,
);

// ---------------------------------------------------------------------------------------------
// fixtures

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn call(tenant: &str, id: &str, provider_call_id: &str, created: DateTime<Utc>) -> CallRecord {
    CallRecord {
        tenant: tenant.into(),
        call_id: id.into(),
        provider: Provider::Twilio,
        provider_call_id: provider_call_id.into(),
        state: CallState::new(CallStatus::Initiated),
        created_at: created,
        updated_at: created,
        version: 1,
        node_id: None,
    }
}

fn event(tenant: &str, call_id: &str, event_id: &str, received: DateTime<Utc>) -> StoredEvent {
    let mut ev = CallEvent::new(Provider::Exotel, "exo-1");
    ev.status = Some(CallStatus::Ringing);
    ev.raw.insert("CallSid".into(), "exo-1".into());
    ev.raw.insert("n".into(), event_id.into());
    StoredEvent {
        tenant: tenant.into(),
        call_id: call_id.into(),
        event_id: event_id.into(),
        received_at: received,
        event: ev,
        enqueued: false,
        expires_at: None,
    }
}

fn node(id: &str, expires_at: DateTime<Utc>) -> MediaNode {
    MediaNode {
        id: id.into(),
        sip_uri: format!("sip:{id}@10.0.0.1:5060"),
        ws_url: format!("wss://{id}.example.invalid/stream"),
        capacity: 100,
        active_calls: 3,
        draining: false,
        last_heartbeat: expires_at - chrono::Duration::seconds(30),
        expires_at,
    }
}

fn envelope(tenant: &str, call_id: &str, n: u32) -> String {
    serde_json::json!({"v": 1, "tenant": tenant, "call_id": call_id, "n": n}).to_string()
}

const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// calls

async fn calls_conditional_create(e: &Env) {
    let first = call("t1", "c1", "CA1", at(0));
    assert_eq!(
        e.s.calls.create_call(&first).await.unwrap(),
        PutOutcome::Inserted
    );

    let mut second = call("t1", "c1", "CA-other", at(5));
    second.state.status = CallStatus::Ringing;
    assert_eq!(
        e.s.calls.create_call(&second).await.unwrap(),
        PutOutcome::Exists(first.clone())
    );
    assert_eq!(
        e.s.calls.get_call("t1", "c1").await.unwrap(),
        Some(first.clone())
    );

    // Same call id under another tenant is another call.
    let other = call("t2", "c1", "CA1", at(0));
    assert_eq!(
        e.s.calls.create_call(&other).await.unwrap(),
        PutOutcome::Inserted
    );
    assert_eq!(e.s.calls.get_call("t2", "c1").await.unwrap(), Some(other));
    assert_eq!(e.s.calls.get_call("t1", "nope").await.unwrap(), None);

    // Ids containing the key separator do not collide.
    let a = call("a#C#b", "c", "x", at(0));
    let b = call("a", "b#C#c", "x", at(0));
    assert_eq!(
        e.s.calls.create_call(&a).await.unwrap(),
        PutOutcome::Inserted
    );
    assert_eq!(
        e.s.calls.create_call(&b).await.unwrap(),
        PutOutcome::Inserted
    );
    assert_eq!(e.s.calls.get_call("a#C#b", "c").await.unwrap(), Some(a));
}

async fn calls_cas_update(e: &Env) {
    let mut rec = call("t1", "c1", "CA1", at(0));
    e.s.calls.create_call(&rec).await.unwrap();

    let mut v2 = rec.clone();
    v2.version = 2;
    v2.state.status = CallStatus::Ringing;
    v2.node_id = Some("node-a".into());
    v2.updated_at = at(3);
    assert!(e.s.calls.update_call(&v2).await.unwrap());

    // A writer that read version 1 too loses.
    let mut stale = rec.clone();
    stale.version = 2;
    stale.state.status = CallStatus::Failed;
    assert!(!e.s.calls.update_call(&stale).await.unwrap());
    assert_eq!(
        e.s.calls.get_call("t1", "c1").await.unwrap(),
        Some(v2.clone())
    );

    // Not bumped (expects 1 while 2 is stored), skipping ahead, version 0: all conflicts.
    rec.version = 1;
    assert!(!e.s.calls.update_call(&rec).await.unwrap());
    rec.version = 4;
    assert!(!e.s.calls.update_call(&rec).await.unwrap());
    rec.version = 0;
    assert!(!e.s.calls.update_call(&rec).await.unwrap());

    let mut v3 = v2.clone();
    v3.version = 3;
    v3.state.status = CallStatus::Completed;
    v3.state.duration_s = Some(42);
    assert!(e.s.calls.update_call(&v3).await.unwrap());
    assert_eq!(e.s.calls.get_call("t1", "c1").await.unwrap(), Some(v3));

    // Updating a call that does not exist creates nothing.
    let mut ghost = call("t1", "ghost", "CA9", at(0));
    ghost.version = 2;
    assert!(!e.s.calls.update_call(&ghost).await.unwrap());
    assert_eq!(e.s.calls.get_call("t1", "ghost").await.unwrap(), None);
}

async fn calls_find_by_provider_id(e: &Env) {
    let a = call("t1", "c1", "CA-shared", at(0));
    let b = call("t2", "c2", "CA-shared", at(0));
    let mut c = call("t1", "c3", "CA-other", at(1));
    c.provider = Provider::Plivo;
    for r in [&a, &b, &c] {
        e.s.calls.create_call(r).await.unwrap();
    }
    let find = |t: &'static str, p: Provider, id: &'static str| {
        let calls = e.s.calls.clone();
        async move { calls.find_call_by_provider_id(t, p, id).await.unwrap() }
    };
    assert_eq!(find("t1", Provider::Twilio, "CA-shared").await, Some(a));
    assert_eq!(find("t2", Provider::Twilio, "CA-shared").await, Some(b));
    assert_eq!(
        find("t1", Provider::Plivo, "CA-other").await,
        Some(c.clone())
    );
    assert_eq!(find("t1", Provider::Twilio, "CA-other").await, None);
    assert_eq!(find("t3", Provider::Twilio, "CA-shared").await, None);

    // A new provider call id after an update is found under the new id only.
    let mut moved = c.clone();
    moved.version = 2;
    moved.provider_call_id = "CA-renamed".into();
    assert!(e.s.calls.update_call(&moved).await.unwrap());
    assert_eq!(find("t1", Provider::Plivo, "CA-renamed").await, Some(moved));
    assert_eq!(find("t1", Provider::Plivo, "CA-other").await, None);

    // Two calls with one provider id (a reused id): the newest wins.
    let old = call("t4", "old", "CA-dup", at(10));
    let new = call("t4", "new", "CA-dup", at(20));
    e.s.calls.create_call(&new).await.unwrap();
    e.s.calls.create_call(&old).await.unwrap();
    assert_eq!(find("t4", Provider::Twilio, "CA-dup").await, Some(new));
}

async fn calls_list_newest_first(e: &Env) {
    let recs = [
        call("t1", "c-b", "p1", at(30)),
        call("t2", "c-x", "p2", at(25)),
        call("t1", "c-a", "p3", at(10)),
        call("t1", "c-c", "p4", at(50)),
        call("t2", "c-y", "p5", at(60)),
        call("t1", "c-d", "p6", at(30)), // same instant as c-b: call id breaks the tie
    ];
    for r in &recs {
        e.s.calls.create_call(r).await.unwrap();
    }
    let ids = |v: Vec<CallRecord>| v.into_iter().map(|c| c.call_id).collect::<Vec<_>>();
    assert_eq!(
        ids(e.s.calls.list_calls(Some("t1"), 10).await.unwrap()),
        ["c-c", "c-d", "c-b", "c-a"]
    );
    assert_eq!(
        ids(e.s.calls.list_calls(Some("t1"), 2).await.unwrap()),
        ["c-c", "c-d"]
    );
    assert_eq!(
        ids(e.s.calls.list_calls(None, 10).await.unwrap()),
        ["c-y", "c-c", "c-d", "c-b", "c-x", "c-a"]
    );
    assert_eq!(
        ids(e.s.calls.list_calls(None, 3).await.unwrap()),
        ["c-y", "c-c", "c-d"]
    );
    assert!(e
        .s
        .calls
        .list_calls(Some("t1"), 0)
        .await
        .unwrap()
        .is_empty());
    assert!(e
        .s
        .calls
        .list_calls(Some("none"), 5)
        .await
        .unwrap()
        .is_empty());
    // Records come back whole.
    assert_eq!(
        e.s.calls.list_calls(Some("t2"), 1).await.unwrap(),
        vec![recs[4].clone()]
    );
}

// ---------------------------------------------------------------------------------------------
// events

async fn events_dedupe_and_enqueued_flag(e: &Env) {
    let ev1 = event("t1", "c1", "e1", at(5));
    let ev2 = event("t1", "c1", "e2", at(2));
    let ev3 = event("t1", "c1", "e3", at(9));
    for ev in [&ev1, &ev2, &ev3] {
        assert_eq!(
            e.s.events.put_event(ev).await.unwrap(),
            PutOutcome::Inserted
        );
    }
    // A provider retry: same event id, later arrival; the first copy stays.
    let retry = event("t1", "c1", "e1", at(100));
    assert_eq!(
        e.s.events.put_event(&retry).await.unwrap(),
        PutOutcome::Exists(ev1.clone())
    );

    e.s.events
        .mark_event_enqueued("t1", "c1", "e1")
        .await
        .unwrap();
    let mut ev1_enqueued = ev1.clone();
    ev1_enqueued.enqueued = true;
    assert_eq!(
        e.s.events.put_event(&retry).await.unwrap(),
        PutOutcome::Exists(ev1_enqueued.clone())
    );
    // Unknown events: marking them is a no-op and creates nothing.
    e.s.events
        .mark_event_enqueued("t1", "c1", "nope")
        .await
        .unwrap();
    e.s.events
        .mark_event_enqueued("t1", "c9", "e1")
        .await
        .unwrap();

    // Arrival order; other calls' events apart; the call item itself is not an event.
    e.s.calls
        .create_call(&call("t1", "c1", "CA1", at(0)))
        .await
        .unwrap();
    e.s.events
        .put_event(&event("t1", "c2", "e1", at(1)))
        .await
        .unwrap();
    assert_eq!(
        e.s.events.list_events("t1", "c1").await.unwrap(),
        vec![ev2, ev1_enqueued, ev3]
    );
    assert_eq!(e.s.events.list_events("t1", "c9").await.unwrap(), vec![]);
    assert_eq!(e.s.events.list_events("t1", "c2").await.unwrap().len(), 1);
}

async fn events_ttl_invisible_and_replaceable(e: &Env) {
    let mut short = event("t1", "c1", "short", at(1));
    short.expires_at = Some(e.now() + chrono::Duration::seconds(60));
    let mut long = event("t1", "c1", "long", at(2));
    long.expires_at = Some(e.now() + chrono::Duration::hours(2));
    let forever = event("t1", "c1", "forever", at(3));
    for ev in [&short, &long, &forever] {
        assert_eq!(
            e.s.events.put_event(ev).await.unwrap(),
            PutOutcome::Inserted
        );
    }
    assert_eq!(
        e.s.events.put_event(&short).await.unwrap(),
        PutOutcome::Exists(short.clone())
    );
    assert_eq!(e.s.events.list_events("t1", "c1").await.unwrap().len(), 3);

    e.advance(Duration::from_secs(61));
    assert_eq!(
        e.s.events.list_events("t1", "c1").await.unwrap(),
        vec![long.clone(), forever.clone()]
    );
    // An expired event no longer dedupes: the new copy is stored.
    let mut again = event("t1", "c1", "short", at(50));
    again.expires_at = Some(e.now() + chrono::Duration::seconds(60));
    assert_eq!(
        e.s.events.put_event(&again).await.unwrap(),
        PutOutcome::Inserted
    );
    assert_eq!(
        e.s.events.list_events("t1", "c1").await.unwrap(),
        vec![long, forever.clone(), again]
    );

    e.advance(Duration::from_secs(3 * 3600));
    assert_eq!(
        e.s.events.list_events("t1", "c1").await.unwrap(),
        vec![forever]
    );
}

// ---------------------------------------------------------------------------------------------
// tenants, nodes, counters

async fn reports_by_either_id_with_ttl(e: &Env) {
    let now = e.now();
    let report = StoredReport {
        tenant: "t1".into(),
        call_id: Some("call-1".into()),
        transport_id: "abc@127.0.0.1".into(),
        created_at: now,
        body: serde_json::json!({"transcript": [{"speaker": "caller", "text": "hello", "at_ms": 10}]}),
        expires_at: Some(now + chrono::Duration::hours(1)),
    };
    e.s.reports.put_report(&report).await.unwrap();
    assert_eq!(
        e.s.reports.get_report("call-1").await.unwrap(),
        Some(report.clone())
    );
    assert_eq!(
        e.s.reports.get_report("abc@127.0.0.1").await.unwrap(),
        Some(report.clone())
    );
    assert_eq!(e.s.reports.get_report("call-2").await.unwrap(), None);
    // Replaced on a second put.
    let mut again = report.clone();
    again.body = serde_json::json!({"transcript": []});
    e.s.reports.put_report(&again).await.unwrap();
    assert_eq!(
        e.s.reports.get_report("call-1").await.unwrap(),
        Some(again.clone())
    );
    // A report without our call id is found by its transport id only.
    let direct = StoredReport {
        call_id: None,
        transport_id: "sip-only".into(),
        expires_at: None,
        ..again
    };
    e.s.reports.put_report(&direct).await.unwrap();
    assert_eq!(
        e.s.reports.get_report("sip-only").await.unwrap(),
        Some(direct)
    );
    // Expired reports are gone.
    e.advance(Duration::from_secs(2 * 3600));
    assert_eq!(e.s.reports.get_report("call-1").await.unwrap(), None);
    assert!(e.s.reports.get_report("sip-only").await.unwrap().is_some());
}

async fn tenants_round_trip_with_credentials(e: &Env) {
    let mut credentials = BTreeMap::new();
    credentials.insert(
        Provider::Twilio,
        ProviderCredentials {
            account: "AC123".into(),
            secret: "twilio-token".into(),
            ..Default::default()
        },
    );
    credentials.insert(
        Provider::Plivo,
        ProviderCredentials {
            account: "MA1".into(),
            secret: "sub-token".into(),
            main_account_secret: Some("main-token".into()),
            api_key: None,
            allow_cidrs: vec![],
        },
    );
    credentials.insert(
        Provider::Exotel,
        ProviderCredentials {
            account: "sid".into(),
            secret: "exo-token".into(),
            main_account_secret: None,
            api_key: Some("exo-key".into()),
            allow_cidrs: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
        },
    );
    let mut t = Tenant {
        id: "acme#1".into(),
        name: "Acme ಕನ್ನಡ".into(),
        fallback_message: "Sorry, all our agents are busy.".into(),
        credentials,
    };
    assert_eq!(e.s.tenants.get_tenant("acme#1").await.unwrap(), None);
    e.s.tenants.put_tenant(&t).await.unwrap();
    assert_eq!(
        e.s.tenants.get_tenant("acme#1").await.unwrap(),
        Some(t.clone())
    );

    t.credentials.remove(&Provider::Twilio);
    t.name = "Acme 2".into();
    e.s.tenants.put_tenant(&t).await.unwrap();
    assert_eq!(e.s.tenants.get_tenant("acme#1").await.unwrap(), Some(t));
    assert_eq!(e.s.tenants.get_tenant("acme").await.unwrap(), None);
}

async fn nodes_heartbeat_list_expiry_remove(e: &Env) {
    let now = e.now();
    let mut a = node("node-a", now + chrono::Duration::seconds(30));
    let b = node("node-b", now + chrono::Duration::seconds(90));
    e.s.nodes.heartbeat(&b).await.unwrap();
    e.s.nodes.heartbeat(&a).await.unwrap();
    assert_eq!(
        e.s.nodes.list_nodes().await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    // A heartbeat replaces the entry (draining nodes are still listed).
    a.active_calls = 7;
    a.draining = true;
    e.s.nodes.heartbeat(&a).await.unwrap();
    assert_eq!(
        e.s.nodes.list_nodes().await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    e.advance(Duration::from_secs(45));
    assert_eq!(e.s.nodes.list_nodes().await.unwrap(), vec![b.clone()]);

    // A late heartbeat brings a node back.
    a.expires_at = e.now() + chrono::Duration::seconds(30);
    e.s.nodes.heartbeat(&a).await.unwrap();
    assert_eq!(
        e.s.nodes.list_nodes().await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    e.s.nodes.remove_node("node-b").await.unwrap();
    e.s.nodes.remove_node("never-there").await.unwrap();
    assert_eq!(e.s.nodes.list_nodes().await.unwrap(), vec![a]);
    e.advance(Duration::from_secs(31));
    assert_eq!(e.s.nodes.list_nodes().await.unwrap(), vec![]);
}

async fn counters_atomic_under_concurrency(e: &Env) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let counters = e.s.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(counters.incr("calls#t1", 1).await.unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    // Every increment saw a distinct value: 1..=200.
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<i64>>());
    assert_eq!(e.s.counters.incr("calls#t1", 0).await.unwrap(), 200);
    assert_eq!(e.s.counters.incr("calls#t1", -50).await.unwrap(), 150);
    assert_eq!(e.s.counters.incr("other", -3).await.unwrap(), -3);
    assert_eq!(e.s.counters.incr("calls%23t1", 5).await.unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// queue

async fn queue_send_receive_delete(e: &Env) {
    let q = &e.s.queue;
    for body in ["one", "two", "three"] {
        q.send(CALL_EVENTS, body, None).await.unwrap();
    }
    let got = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    let mut bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["one", "three", "two"]);
    assert!(got.iter().all(|m| m.receive_count == 1));
    let mut ids: Vec<_> = got.iter().map(|m| &m.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // In flight: nothing more to receive.
    assert!(q.receive(CALL_EVENTS, 10, LONG).await.unwrap().is_empty());

    let keep = got.iter().find(|m| m.body == "two").unwrap();
    for m in got.iter().filter(|m| m.body != "two") {
        q.delete(CALL_EVENTS, &m.receipt).await.unwrap();
    }
    // Release "two" at once (a nack): it comes back with a new receipt.
    q.change_visibility(CALL_EVENTS, &keep.receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].body.as_str()),
        (keep.id.as_str(), "two")
    );
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, keep.receipt);
    q.delete(CALL_EVENTS, &again[0].receipt).await.unwrap();
    // Deleting twice and releasing a deleted message are no-ops.
    q.delete(CALL_EVENTS, &again[0].receipt).await.unwrap();
    q.change_visibility(CALL_EVENTS, &again[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    assert!(q.receive(CALL_EVENTS, 10, LONG).await.unwrap().is_empty());
    // The DLQ saw nothing.
    assert!(q
        .receive(CALL_EVENTS_DLQ, 10, LONG)
        .await
        .unwrap()
        .is_empty());
}

async fn queue_visibility_timeout_redelivers(e: &Env) {
    let q = &e.s.queue;
    q.send(CALL_EVENTS, "job", None).await.unwrap();
    let first = q
        .receive(CALL_EVENTS, 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(q
        .receive(CALL_EVENTS, 1, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());

    e.wait_visibility(Duration::from_millis(1500)).await;
    let second = q
        .receive(CALL_EVENTS, 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].body, "job");
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);

    // Extending the timeout keeps it hidden past the original deadline.
    q.change_visibility(CALL_EVENTS, &second[0].receipt, Duration::from_secs(60))
        .await
        .unwrap();
    e.wait_visibility(Duration::from_millis(1500)).await;
    assert!(q
        .receive(CALL_EVENTS, 1, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    q.delete(CALL_EVENTS, &second[0].receipt).await.unwrap();
    e.advance(Duration::from_secs(120));
    assert!(q
        .receive(CALL_EVENTS, 1, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}

async fn queue_dedupe_id_drops_second_send(e: &Env) {
    let q = &e.s.queue;
    q.send(CALL_EVENTS, "first", Some("evt-1")).await.unwrap();
    q.send(CALL_EVENTS, "duplicate", Some("evt-1"))
        .await
        .unwrap();
    q.send(CALL_EVENTS, "other", Some("evt-2")).await.unwrap();
    // Ids SQS would reject are made valid, still deduped.
    q.send(CALL_EVENTS, "odd id", Some("with space é"))
        .await
        .unwrap();
    q.send(CALL_EVENTS, "odd id again", Some("with space é"))
        .await
        .unwrap();
    let got = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    let mut bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["first", "odd id", "other"]);
}

async fn queue_redrive_to_dlq(e: &Env) {
    let q = &e.s.queue;
    let vis = Duration::from_secs(1);
    q.send(CALL_EVENTS, "poison", None).await.unwrap();
    let mut id = String::new();
    for n in 1..=MAX_RECEIVES {
        let got = q.receive(CALL_EVENTS, 10, vis).await.unwrap();
        assert_eq!(got.len(), 1, "receive #{n}");
        assert_eq!(got[0].receive_count, n);
        id = got[0].id.clone();
        e.wait_visibility(Duration::from_millis(1500)).await;
    }
    // The (MAX_RECEIVES + 1)th receive finds it moved to the DLQ instead.
    assert!(q.receive(CALL_EVENTS, 10, vis).await.unwrap().is_empty());
    let dead = q.receive(CALL_EVENTS_DLQ, 10, LONG).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].body.as_str()),
        (id.as_str(), "poison")
    );
    // The receive count carries over into the DLQ.
    assert_eq!(dead[0].receive_count, MAX_RECEIVES + 1);
    q.delete(CALL_EVENTS_DLQ, &dead[0].receipt).await.unwrap();
    assert!(q.receive(CALL_EVENTS, 10, vis).await.unwrap().is_empty());
}

async fn queue_fifo_groups_per_call(e: &Env) {
    let q = &e.s.queue;
    q.send(CALL_EVENTS, &envelope("t1", "A", 1), None)
        .await
        .unwrap();
    q.send(CALL_EVENTS, &envelope("t1", "A", 2), None)
        .await
        .unwrap();
    q.send(CALL_EVENTS, &envelope("t1", "B", 1), None)
        .await
        .unwrap();

    let a1 = q.receive(CALL_EVENTS, 1, LONG).await.unwrap();
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0].body, envelope("t1", "A", 1));
    // Call A's next event waits while A1 is in flight; call B's does not.
    let b = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].body, envelope("t1", "B", 1));
    q.delete(CALL_EVENTS, &a1[0].receipt).await.unwrap();
    let a2 = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    assert_eq!(a2.len(), 1);
    assert_eq!(a2[0].body, envelope("t1", "A", 2));

    // One receive returns a group's messages in order.
    q.send(CALL_EVENTS, &envelope("t2", "C", 1), None)
        .await
        .unwrap();
    q.send(CALL_EVENTS, &envelope("t2", "C", 2), None)
        .await
        .unwrap();
    let c = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    let bodies: Vec<_> = c.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, [envelope("t2", "C", 1), envelope("t2", "C", 2)]);
}

async fn queue_purge(e: &Env) {
    let q = &e.s.queue;
    for i in 0..3 {
        q.send(CALL_EVENTS, &format!("m{i}"), None).await.unwrap();
    }
    let inflight = q.receive(CALL_EVENTS, 1, LONG).await.unwrap();
    assert_eq!(inflight.len(), 1);
    q.purge(CALL_EVENTS).await.unwrap();
    e.advance(Duration::from_secs(120));
    assert!(q.receive(CALL_EVENTS, 10, LONG).await.unwrap().is_empty());
    // Deleting a purged message is a no-op.
    q.delete(CALL_EVENTS, &inflight[0].receipt).await.unwrap();
    q.send(CALL_EVENTS, "after", None).await.unwrap();
    assert_eq!(q.receive(CALL_EVENTS, 10, LONG).await.unwrap().len(), 1);
}

async fn queue_unknown_name(e: &Env) {
    let q = &e.s.queue;
    assert!(matches!(
        q.send("nope", "x", None).await,
        Err(StoreError::UnknownQueue(n)) if n == "nope"
    ));
    assert!(matches!(
        q.receive("nope", 1, LONG).await,
        Err(StoreError::UnknownQueue(_))
    ));
    assert!(matches!(
        q.delete("nope", "r").await,
        Err(StoreError::UnknownQueue(_))
    ));
    assert!(matches!(
        q.purge("nope").await,
        Err(StoreError::UnknownQueue(_))
    ));
    assert!(matches!(
        q.change_visibility("nope", "r", LONG).await,
        Err(StoreError::UnknownQueue(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// adapter-specific

/// Embedded: a receipt from an earlier receive no longer deletes the message.
#[tokio::test]
async fn embedded_stale_receipt_is_a_no_op() {
    let e = embedded_env();
    let q = &e.s.queue;
    // The DLQ has no redrive of its own, so a third receive is allowed.
    const Q: &str = CALL_EVENTS_DLQ;
    q.send(Q, "job", None).await.unwrap();
    let first = q.receive(Q, 1, Duration::from_secs(1)).await.unwrap();
    e.advance(Duration::from_secs(2));
    let second = q.receive(Q, 1, Duration::from_secs(1)).await.unwrap();
    q.delete(Q, &first[0].receipt).await.unwrap();
    q.change_visibility(Q, &first[0].receipt, LONG)
        .await
        .unwrap();
    e.advance(Duration::from_secs(2));
    let third = q.receive(Q, 1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].id, second[0].id);
    assert_eq!(third[0].receive_count, 3);
}

/// Embedded keeps dedupe ids forever (SQS: 5 minutes), even after the message is deleted.
#[tokio::test]
async fn embedded_dedupe_outlives_the_message() {
    let e = embedded_env();
    let q = &e.s.queue;
    q.send(CALL_EVENTS, "a", Some("id-1")).await.unwrap();
    let got = q.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    q.delete(CALL_EVENTS, &got[0].receipt).await.unwrap();
    e.advance(Duration::from_secs(3600));
    q.send(CALL_EVENTS, "a", Some("id-1")).await.unwrap();
    q.purge(CALL_EVENTS).await.unwrap();
    q.send(CALL_EVENTS, "a", Some("id-1")).await.unwrap();
    assert!(q.receive(CALL_EVENTS, 10, LONG).await.unwrap().is_empty());
    // Dedupe is per queue.
    q.send(CALL_EVENTS_DLQ, "a", Some("id-1")).await.unwrap();
    assert_eq!(q.receive(CALL_EVENTS_DLQ, 10, LONG).await.unwrap().len(), 1);
}

#[tokio::test]
async fn embedded_receive_is_capped_at_ten_like_sqs() {
    let e = embedded_env();
    for i in 0..15 {
        e.s.queue
            .send(CALL_EVENTS, &format!("m{i}"), None)
            .await
            .unwrap();
    }
    assert!(e
        .s
        .queue
        .receive(CALL_EVENTS, 0, LONG)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        e.s.queue
            .receive(CALL_EVENTS, 100, LONG)
            .await
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        e.s.queue
            .receive(CALL_EVENTS, 100, LONG)
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn embedded_default_queues_redrive_after_default_max() {
    let offset = Arc::new(Mutex::new(chrono::Duration::zero()));
    let store = EmbeddedStore::open_in_memory()
        .unwrap()
        .with_clock(clock(&offset));
    let e = Env {
        s: store.stores(),
        offset,
        real_queue_time: false,
    };
    let max = vaani_store::queues::DEFAULT_MAX_RECEIVES;
    e.s.queue.send(CALL_EVENTS, "x", None).await.unwrap();
    for _ in 0..max {
        assert_eq!(
            e.s.queue.receive(CALL_EVENTS, 1, LONG).await.unwrap().len(),
            1
        );
        e.advance(LONG * 2);
    }
    assert!(e
        .s
        .queue
        .receive(CALL_EVENTS, 1, LONG)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        e.s.queue
            .receive(CALL_EVENTS_DLQ, 1, LONG)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn embedded_configure_queue_checks_its_dlq() {
    let s = EmbeddedStore::open_in_memory().unwrap();
    assert!(matches!(
        s.configure_queue("jobs", Some(("missing", 3))),
        Err(StoreError::UnknownQueue(_))
    ));
    assert!(matches!(
        s.configure_queue("jobs", Some(("jobs", 3))),
        Err(StoreError::UnknownQueue(_))
    ));
    s.configure_queue("jobs-dlq", None).unwrap();
    assert!(s.configure_queue("jobs", Some(("jobs-dlq", 0))).is_err());
    s.configure_queue("jobs", Some(("jobs-dlq", 3))).unwrap();
}

#[tokio::test]
async fn embedded_file_persists_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("state");
    {
        let s = EmbeddedStore::open(&path).unwrap().stores();
        s.calls
            .create_call(&call("t1", "c1", "CA1", at(0)))
            .await
            .unwrap();
        s.queue
            .send(CALL_EVENTS, "persisted", Some("d"))
            .await
            .unwrap();
        assert_eq!(s.counters.incr("k", 2).await.unwrap(), 2);
    }
    let db = path.join(vaani_store::embedded::DB_FILE);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2, "both migrations applied (tables, then reports)");
    }
    // Reopening keeps data and does not re-run migrations.
    let s = EmbeddedStore::open(&path).unwrap().stores();
    assert!(s.calls.get_call("t1", "c1").await.unwrap().is_some());
    assert_eq!(s.counters.incr("k", 1).await.unwrap(), 3);
    s.queue
        .send(CALL_EVENTS, "persisted", Some("d"))
        .await
        .unwrap();
    let got = s.queue.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    drop(s);

    // A database from a newer build is refused, not damaged.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

fn count_calls(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap()
}

/// Group commit: other connections see a write once the window has passed (the flusher commits
/// an idle transaction), or at once after `flush`; per-write commit needs neither.
#[tokio::test]
async fn embedded_group_commit_reaches_other_connections() {
    use vaani_store::embedded::{OpenOptions, DB_FILE};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let db = dir.path().join(DB_FILE);
    let stores = store.stores();
    stores
        .calls
        .create_call(&call("t1", "c1", "CA1", at(0)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count_calls(&db), 1);

    let dir2 = tempfile::tempdir().unwrap();
    let db2 = dir2.path().join(DB_FILE);
    let store = EmbeddedStore::open_with(
        dir2.path(),
        OpenOptions {
            commit_window: Some(Duration::from_secs(3600)),
        },
    )
    .unwrap();
    let shared = Arc::new(store);
    let calls: Arc<dyn vaani_store::CallStore> = shared.clone();
    calls
        .create_call(&call("t1", "c1", "CA1", at(0)))
        .await
        .unwrap();
    assert_eq!(
        calls.get_call("t1", "c1").await.unwrap().map(|c| c.version),
        Some(1)
    );
    assert_eq!(count_calls(&db2), 0, "committed before the window");
    shared.flush().unwrap();
    assert_eq!(count_calls(&db2), 1);

    let dir3 = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(
        dir3.path(),
        OpenOptions {
            commit_window: None,
        },
    )
    .unwrap();
    let stores = store.stores();
    stores
        .calls
        .create_call(&call("t1", "c1", "CA1", at(0)))
        .await
        .unwrap();
    assert_eq!(count_calls(&dir3.path().join(DB_FILE)), 1);
}

/// `Durability::sync` commits the caller's writes, and those of every request that wrote in
/// the meantime, in one transaction: after it returns they survive the process.
#[tokio::test]
async fn embedded_sync_makes_writes_durable_in_one_commit() {
    use vaani_store::embedded::{OpenOptions, DB_FILE};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let stores = EmbeddedStore::open_with(
        dir.path(),
        OpenOptions {
            commit_window: Some(Duration::from_secs(3600)),
        },
    )
    .unwrap()
    .stores();
    // Nothing open: sync is a no-op.
    stores.durability.sync().await.unwrap();
    let db = &db;
    let request = |n: u32| {
        let stores = stores.clone();
        async move {
            let id = format!("c{n}");
            stores
                .calls
                .create_call(&call("t1", &id, &format!("CA{n}"), at(0)))
                .await
                .unwrap();
            stores.durability.sync().await.unwrap();
            // Durable (visible to another connection) as soon as this request's sync returned.
            let conn = rusqlite::Connection::open(db).unwrap();
            let mine: i64 = conn
                .query_row(
                    "SELECT count(*) FROM calls WHERE call_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(mine, 1, "request {n}");
        }
    };
    futures::future::join_all((0..8).map(request)).await;
    assert_eq!(count_calls(db), 8);
}

/// Two stores on one file (the dev server and a CLI): conditional writes stay correct across
/// them, each waiting for the other's open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_two_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedStore::open(dir.path()).unwrap().stores();
    let b = EmbeddedStore::open(dir.path()).unwrap().stores();
    let first = call("t1", "c1", "CA1", at(0));
    assert_eq!(
        a.calls.create_call(&first).await.unwrap(),
        PutOutcome::Inserted
    );
    assert_eq!(
        b.calls
            .create_call(&call("t1", "c1", "CA2", at(9)))
            .await
            .unwrap(),
        PutOutcome::Exists(first)
    );
    for i in 0..50 {
        let (x, y) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        x.counters.incr("k", 1).await.unwrap();
        y.counters.incr("k", 1).await.unwrap();
    }
    assert_eq!(a.counters.incr("k", 0).await.unwrap(), 100);
    b.queue
        .send(CALL_EVENTS, "from b", Some("d1"))
        .await
        .unwrap();
    a.queue
        .send(CALL_EVENTS, "from a", Some("d1"))
        .await
        .unwrap();
    let got = a.queue.receive(CALL_EVENTS, 10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "from b");
}

#[tokio::test]
async fn embedded_corrupt_rows_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let stores = s.stores();
    stores
        .calls
        .create_call(&call("t1", "c1", "CA1", at(0)))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("vaani.db")).unwrap();
    conn.execute("UPDATE calls SET doc = '{not json'", [])
        .unwrap();
    let err = stores.calls.get_call("t1", "c1").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.is_retryable());
}

#[cfg(feature = "aws")]
/// AWS: schema creation is idempotent and hands back the same queue URLs.
#[tokio::test]
async fn aws_ensure_schema_is_idempotent() {
    let Some(cfg) = aws_config().await else {
        return;
    };
    let specs = QueueSpec::call_events(
        cfg.queue_urls[CALL_EVENTS]
            .rsplit('/')
            .next()
            .unwrap()
            .trim_start_matches("vaani-call-events")
            .trim_end_matches(".fifo"),
        MAX_RECEIVES,
    );
    let again = aws::ensure_schema(&cfg, &specs).await.unwrap();
    assert_eq!(again, cfg);
    assert_eq!(again.queue_urls.len(), 2);
}

#[cfg(feature = "aws")]
/// AWS: an unreachable endpoint fails fast as a retryable backend error, without consulting the
/// default credential chain (no EC2 metadata probe).
#[tokio::test]
async fn aws_unreachable_endpoint_is_a_retryable_error() {
    if moto_url().is_none() {
        return;
    }
    let mut cfg = AwsConfig::local("http://127.0.0.1:9", "vaani-none");
    cfg.queue_urls.insert(
        CALL_EVENTS.into(),
        "http://127.0.0.1:9/000000000000/q.fifo".into(),
    );
    let s = AwsStore::connect(&cfg).await.stores();
    let started = std::time::Instant::now();
    let err = s.tenants.get_tenant("t").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let err = s.queue.send(CALL_EVENTS, "x", None).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}
