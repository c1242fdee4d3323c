//! What the node knows about its SIP calls, for operators and tests: live calls and the last
//! ended ones, with their state, end reason, key presses and packet counts. Served as JSON at
//! `GET /debug/sip/calls` by `vaani dev` (see [`router`]). It holds no phone numbers (From/To
//! are not recorded) and no tokens.
//!
//! Why an endpoint rather than log lines for tests: a test reads one JSON document instead of
//! scraping a child process's stderr, and the same records feed `/metrics` later.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How many ended calls are kept.
const KEEP_ENDED: usize = 100;

/// One call's record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallRecord {
    /// The node's handle for the call.
    pub id: u64,
    pub sip_call_id: String,
    /// Our call id (`X-Vaani-Call-Id`), when the answer webhook sent the call.
    pub call_id: Option<String>,
    pub tenant: Option<String>,
    /// Signalling source `ip:port`.
    pub source: String,
    /// `PCMU` / `PCMA`.
    pub codec: String,
    /// Our RTP port.
    pub rtp_port: u16,
    /// The media source we latched onto.
    pub latched: Option<String>,
    /// `answered`, `confirmed`, `ended`.
    pub state: String,
    pub end_reason: Option<String>,
    /// Key presses received, in order (RFC 4733 and SIP INFO).
    pub digits: String,
    pub rtp_received: u64,
    pub rtp_sent: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By id: call handles grow, so this is also the order calls came in. A map, because the
    /// media engine updates thousands of live calls' counters every second.
    live: BTreeMap<u64, CallRecord>,
    ended: VecDeque<CallRecord>,
}

/// Shared between the SIP task, the call tasks and the HTTP endpoint. Each access holds the
/// lock for a few field writes only.
#[derive(Debug, Clone, Default)]
pub struct CallRegistry {
    inner: Arc<Mutex<Inner>>,
}

/// The JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub live: Vec<CallRecord>,
    pub ended: Vec<CallRecord>,
}

impl CallRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    pub fn add(&self, record: CallRecord) {
        self.with(|i| {
            i.live.insert(record.id, record);
        });
    }

    /// Changes a call's record (live, or recently ended: a call's media task publishes its
    /// last counters after the SIP side has ended it).
    pub fn update(&self, id: u64, f: impl FnOnce(&mut CallRecord)) {
        self.with(|i| {
            if let Some(r) = i.live.get_mut(&id) {
                f(r);
            } else if let Some(r) = i.ended.iter_mut().rev().find(|r| r.id == id) {
                f(r);
            }
        });
    }

    /// Moves a call to the ended list.
    pub fn end(&self, id: u64, reason: &str) {
        let now = chrono::Utc::now().to_rfc3339();
        self.with(|i| {
            if let Some(mut r) = i.live.remove(&id) {
                r.state = "ended".into();
                r.end_reason = Some(reason.to_string());
                r.ended_at = Some(now);
                if i.ended.len() >= KEEP_ENDED {
                    i.ended.pop_front();
                }
                i.ended.push_back(r);
            }
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|i| Snapshot {
            live: i.live.values().cloned().collect(),
            ended: i.ended.iter().cloned().collect(),
        })
    }
}

/// `GET /debug/sip/calls`: the registry as JSON.
pub fn router(registry: CallRegistry) -> axum::Router {
    axum::Router::new()
        .route(
            "/debug/sip/calls",
            axum::routing::get(
                |axum::extract::State(r): axum::extract::State<CallRegistry>| async move {
                    axum::Json(r.snapshot())
                },
            ),
        )
        .with_state(registry)
}
