//! What the node knows about its SIP calls, for operators and tests: live calls and the last
//! ended ones, with their state, end reason, key presses and packet counts. Served as JSON at
//! `GET /debug/sip/calls` by `vaani dev` (see [`router`]). It holds no phone numbers (From/To
//! are not recorded) and no tokens.
//!
//! The registry is generic over its record ([`Record`]): WebRTC calls keep their own kind of
//! record in a registry of their own (`crate::webrtc::WebRtcCallRecord`, served at
//! `GET /debug/webrtc/calls` through [`routes`]).
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
    /// Signalling peer `ip:port`: where an incoming call came from, or where a call we placed
    /// was sent (the target or the outbound proxy).
    pub source: String,
    /// `inbound` (the node answered) or `outbound` (the node placed it).
    pub direction: String,
    /// The trunk an inbound call came from.
    pub trunk: Option<String>,
    /// The agent answering it, when one was named (else the app's default).
    pub agent: Option<String>,
    /// `PCMU`, `PCMA`, `G722` or `opus`.
    pub codec: String,
    /// Our RTP port.
    pub rtp_port: u16,
    /// The media source we latched onto.
    pub latched: Option<String>,
    /// `answered`, `confirmed`, `ended`; a call we placed starts `dialing`, may be `ringing`
    /// or `early` (183), and is `confirmed` once answered (we send the ACK).
    pub state: String,
    pub end_reason: Option<String>,
    /// Key presses received, in order (RFC 4733 and SIP INFO).
    pub digits: String,
    /// A blind transfer of the call (REFER) and how it went: `requested`, `accepted`,
    /// `trying: 180`, `succeeded: 200`, `failed: 486`.
    pub transfer: Option<String>,
    pub rtp_received: u64,
    pub rtp_sent: u64,
    pub started_at: String,
    /// When the call was answered (absent for a call we placed that never connected).
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
}

/// What a registry keeps per call: a handle to find it by, and how it is marked ended.
pub trait Record: Clone + Serialize + Send + 'static {
    /// The node's handle for the call.
    fn id(&self) -> u64;
    /// Marks the record ended, `at` (RFC 3339), for `reason`.
    fn mark_ended(&mut self, reason: &str, at: String);
}

impl Record for CallRecord {
    fn id(&self) -> u64 {
        self.id
    }

    fn mark_ended(&mut self, reason: &str, at: String) {
        self.state = "ended".into();
        self.end_reason = Some(reason.to_string());
        self.ended_at = Some(at);
    }
}

#[derive(Debug)]
struct Inner<R> {
    /// By id: call handles grow, so this is also the order calls came in. A map, because the
    /// media engine updates thousands of live calls' counters every second.
    live: BTreeMap<u64, R>,
    ended: VecDeque<R>,
}

/// Shared between the SIP task, the call tasks and the HTTP endpoint. Each access holds the
/// lock for a few field writes only.
#[derive(Debug)]
pub struct CallRegistry<R = CallRecord> {
    inner: Arc<Mutex<Inner<R>>>,
}

impl<R> Clone for CallRegistry<R> {
    fn clone(&self) -> Self {
        CallRegistry {
            inner: self.inner.clone(),
        }
    }
}

impl<R> Default for CallRegistry<R> {
    fn default() -> Self {
        CallRegistry {
            inner: Arc::new(Mutex::new(Inner {
                live: BTreeMap::new(),
                ended: VecDeque::new(),
            })),
        }
    }
}

/// The JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot<R = CallRecord> {
    pub live: Vec<R>,
    pub ended: Vec<R>,
}

impl<R: Record> CallRegistry<R> {
    fn with<T>(&self, f: impl FnOnce(&mut Inner<R>) -> T) -> T {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    pub fn add(&self, record: R) {
        self.with(|i| {
            i.live.insert(record.id(), record);
        });
    }

    /// Changes a call's record (live, or recently ended: a call's media task publishes its
    /// last counters after the SIP side has ended it).
    pub fn update(&self, id: u64, f: impl FnOnce(&mut R)) {
        self.with(|i| {
            if let Some(r) = i.live.get_mut(&id) {
                f(r);
            } else if let Some(r) = i.ended.iter_mut().rev().find(|r| r.id() == id) {
                f(r);
            }
        });
    }

    /// Moves a call to the ended list.
    pub fn end(&self, id: u64, reason: &str) {
        let now = chrono::Utc::now().to_rfc3339();
        self.with(|i| {
            if let Some(mut r) = i.live.remove(&id) {
                r.mark_ended(reason, now);
                if i.ended.len() >= KEEP_ENDED {
                    i.ended.pop_front();
                }
                i.ended.push_back(r);
            }
        });
    }

    /// Whether a call with this handle is live.
    pub fn is_live(&self, id: u64) -> bool {
        self.with(|i| i.live.contains_key(&id))
    }

    pub fn snapshot(&self) -> Snapshot<R> {
        self.with(|i| Snapshot {
            live: i.live.values().cloned().collect(),
            ended: i.ended.iter().cloned().collect(),
        })
    }
}

/// `GET /debug/sip/calls`: the registry as JSON.
pub fn router(registry: CallRegistry) -> axum::Router {
    routes("/debug/sip/calls", registry)
}

/// `GET {path}`: a registry as JSON.
pub fn routes<R: Record + Sync>(path: &str, registry: CallRegistry<R>) -> axum::Router {
    axum::Router::new()
        .route(
            path,
            axum::routing::get(
                |axum::extract::State(r): axum::extract::State<CallRegistry<R>>| async move {
                    axum::Json(r.snapshot())
                },
            ),
        )
        .with_state(registry)
}
