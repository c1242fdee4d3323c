//! Storage ports and their adapters.
//!
//! Place in the architecture: the control-plane Lambdas and the media nodes talk to state only
//! through these traits. Two adapters implement every port with the same semantics:
//! - `aws`: DynamoDB (single table) and SQS (FIFO), for the deployed system;
//! - `embedded`: one SQLite file (bundled), for `vaani dev` and tests.
//!
//! Shared semantics (checked by one contract suite against both): conditional writes
//! (create-if-absent, compare-and-swap on `version`), atomic counters, TTL (expired items are
//! invisible on read, then deleted lazily), queue visibility timeouts, and redrive to a
//! dead-letter queue after `max_receives` receives.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vaani_core::CallState;
use vaani_events::{CallEvent, Provider};

pub mod embedded;

mod common;

/// A source of "now" for TTL and queue visibility. Tests inject a virtual clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

#[cfg(feature = "aws")]
pub mod aws;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
}

impl StoreError {
    /// Whether a Lambda should let the event be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub tenant: String,
    pub call_id: String,
    pub provider: Provider,
    pub provider_call_id: String,
    pub state: CallState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version: 1 on create, +1 on every successful update.
    pub version: u64,
    /// Media node chosen at answer time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// A call event as stored, keyed by `(tenant, call_id, event_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub tenant: String,
    pub call_id: String,
    /// [`CallEvent::dedupe_id`].
    pub event_id: String,
    pub received_at: DateTime<Utc>,
    pub event: CallEvent,
    /// Set once the event is on the call-events queue (outbox flag).
    pub enqueued: bool,
    /// TTL: invisible after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Outcome of a create-if-absent write.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome<T> {
    Inserted,
    /// Already there; the stored item is returned.
    Exists(T),
}

/// A provider account's credentials, as one tenant configured them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCredentials {
    /// Account SID / Auth ID / project id.
    #[serde(default)]
    pub account: String,
    /// Auth token (webhook signing and REST), or for Telnyx the Ed25519 public key (base64).
    pub secret: String,
    /// Plivo main-account token (for `X-Plivo-Signature-Ma-V3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_account_secret: Option<String>,
    /// Exotel API key (HTTP Basic user) / Telnyx REST API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Exotel: allowed source CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Said to the caller when no media node can take the call.
    pub fallback_message: String,
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<Provider, ProviderCredentials>,
}

/// A media node's registry entry, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaNode {
    pub id: String,
    /// `sip:` URI providers bridge calls to.
    pub sip_uri: String,
    /// `wss://` base URL for provider media streams.
    pub ws_url: String,
    pub capacity: u32,
    pub active_calls: u32,
    pub draining: bool,
    pub last_heartbeat: DateTime<Utc>,
    /// TTL: a node that stops heartbeating disappears.
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait CallStore: Send + Sync {
    /// Create the call unless one with this `(tenant, call_id)` exists.
    async fn create_call(&self, rec: &CallRecord) -> Result<PutOutcome<CallRecord>>;
    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<CallRecord>>;
    async fn find_call_by_provider_id(
        &self,
        tenant: &str,
        provider: Provider,
        provider_call_id: &str,
    ) -> Result<Option<CallRecord>>;
    /// Replace the call iff the stored version is `rec.version - 1` (the caller bumps it).
    /// Returns `false` on a version conflict (re-read and retry).
    async fn update_call(&self, rec: &CallRecord) -> Result<bool>;
    /// Newest first; all tenants when `tenant` is `None`.
    async fn list_calls(&self, tenant: Option<&str>, limit: usize) -> Result<Vec<CallRecord>>;
}

#[async_trait]
pub trait CallEventStore: Send + Sync {
    /// Store the event unless `(tenant, call_id, event_id)` exists.
    async fn put_event(&self, ev: &StoredEvent) -> Result<PutOutcome<StoredEvent>>;
    async fn mark_event_enqueued(&self, tenant: &str, call_id: &str, event_id: &str) -> Result<()>;
    /// In arrival order; expired (TTL) events are not returned.
    async fn list_events(&self, tenant: &str, call_id: &str) -> Result<Vec<StoredEvent>>;
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    async fn put_tenant(&self, tenant: &Tenant) -> Result<()>;
}

#[async_trait]
pub trait NodeRegistry: Send + Sync {
    /// Insert or replace the node's entry.
    async fn heartbeat(&self, node: &MediaNode) -> Result<()>;
    /// Nodes whose entry has not expired (draining ones included).
    async fn list_nodes(&self) -> Result<Vec<MediaNode>>;
    async fn remove_node(&self, id: &str) -> Result<()>;
}

#[async_trait]
pub trait Counters: Send + Sync {
    /// Atomically add `by` to `key` (starting from 0) and return the new value.
    async fn incr(&self, key: &str, by: i64) -> Result<i64>;
}

/// A received queue message. Delete it with `receipt` once handled, or it comes back after
/// its visibility timeout; after `max_receives` receives it moves to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

/// Logical queue names; adapters map them to SQS URLs or SQLite rows.
pub mod queues {
    pub const CALL_EVENTS: &str = "call-events";
    pub const CALL_EVENTS_DLQ: &str = "call-events-dlq";
    /// Receives before a call-events message moves to its dead-letter queue (both adapters'
    /// default; the CDK stack uses the same number).
    pub const DEFAULT_MAX_RECEIVES: u32 = 5;
}

#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Enqueue `body`. With `dedupe_id`, a second send with the same id (within the dedupe
    /// window: 5 minutes on SQS FIFO, forever embedded) is accepted and dropped.
    ///
    /// Queues are FIFO: bodies that are JSON objects with string `tenant` and `call_id` (a
    /// `CallEventEnvelope`) share one message group per call, delivered in order and one batch
    /// at a time; other bodies are unordered.
    async fn send(&self, queue: &str, body: &str, dedupe_id: Option<&str>) -> Result<()>;
    /// At most 10 messages (SQS's cap; `max` above that is clamped). Visibility timeouts are
    /// whole seconds (rounded up, at most 12 hours).
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>>;
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()>;
    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<()>;
    /// Drop every message (tests).
    async fn purge(&self, queue: &str) -> Result<()>;
}

/// Durability of this process's earlier writes. DynamoDB and SQS writes are durable when
/// they return, so their `sync` does nothing; the embedded store groups writes into shared
/// transactions and commits them here. A handler calls `sync` before it acknowledges a
/// webhook, so an acknowledged webhook survives a crash.
#[async_trait]
pub trait Durability: Send + Sync {
    async fn sync(&self) -> Result<()>;
}

/// What a media node's pipeline left behind for one call (transcript, per-turn latencies,
/// engine usage), kept for `vaani calls show`. Found by our call id or by the transport's id
/// (SIP Call-ID, stream id): both keys are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    pub tenant: String,
    /// Our call id, when the call came through a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// SIP Call-ID or the provider's stream id.
    pub transport_id: String,
    pub created_at: DateTime<Utc>,
    /// The report itself (JSON object).
    pub body: serde_json::Value,
    /// TTL: invisible after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Store (or replace) a report under its call id and its transport id.
    async fn put_report(&self, report: &StoredReport) -> Result<()>;
    /// The report whose call id or transport id is `id`.
    async fn get_report(&self, id: &str) -> Result<Option<StoredReport>>;
}

/// All ports together, as handlers take them.
#[derive(Clone)]
pub struct Stores {
    pub calls: Arc<dyn CallStore>,
    pub reports: Arc<dyn ReportStore>,
    pub events: Arc<dyn CallEventStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub nodes: Arc<dyn NodeRegistry>,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn WorkQueue>,
    pub durability: Arc<dyn Durability>,
}
