//! DynamoDB (single table) + SQS (FIFO) adapter, for the deployed system.
//!
//! ## Table
//! Key `pk` (S, hash) / `sk` (S, range); GSIs `gsi1` (`gsi1pk`/`gsi1sk`) and `gsi2`
//! (`gsi2pk`/`gsi2sk`), both projecting ALL; TTL attribute `expires_at` (N, epoch seconds);
//! PAY_PER_REQUEST. The CDK stack creates the same (see [`ensure_schema`] for the reference).
//!
//! | item   | pk                        | sk                 | gsi1pk / gsi1sk                               | gsi2pk / gsi2sk                          |
//! |--------|---------------------------|--------------------|-----------------------------------------------|------------------------------------------|
//! | call   | `T#{tenant}#C#{call_id}`  | `CALL`             | `T#{tenant}#P#{provider}#{provider_call_id}` / `CALL` | `CALLS#{tenant}` / `{created_at}#{call_id}` |
//! | event  | `T#{tenant}#C#{call_id}`  | `EV#{event_id}`    |                                               |                                          |
//! | tenant | `TENANT#{id}`             | `TENANT`           |                                               |                                          |
//! | node   | `NODE`                    | `{id}`             |                                               |                                          |
//! | counter| `CTR#{key}`               | `CTR`              |                                               |                                          |
//!
//! `{tenant}`, `{call_id}`, `{provider_call_id}` and `{key}` inside keys have `%` and `#`
//! percent-escaped so that no two ids share a key. `created_at` in `gsi2sk` is a fixed-width
//! UTC timestamp with nanoseconds, so the index sorts by time. Every item carries its record as
//! JSON in `doc`; calls also carry `tenant`, `call_id`, `provider`, `provider_call_id`,
//! `status`, `created_at`, `updated_at`, `version` and `node_id` as top-level attributes, and
//! TTL'd items `expires_at` (epoch seconds, rounded up) and `expires_ms` (exact).
//!
//! ## Queues
//! FIFO queues, content-based dedupe off: `MessageDeduplicationId` is the caller's dedupe id
//! (or a fresh one), `MessageGroupId` is derived per call from the body (see
//! `common::message_group`). The main queue redrives to its DLQ after `maxReceiveCount`.
//!
//! Consistency note: reads on the table are strongly consistent, but `find_call_by_provider_id`
//! and `list_calls` read GSIs, which DynamoDB updates asynchronously (usually within a second).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, Projection, ProjectionType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vaani_events::Provider;

use crate::common::{batch_size, fifo_id, is_expired, message_group, sortable_ts, visibility_secs};
use crate::{
    queues, system_clock, CallEventStore, CallRecord, CallStore, Clock, Counters, MediaNode,
    NodeRegistry, PutOutcome, QueueMessage, ReportStore, Result, StoreError, StoredEvent,
    StoredReport, Stores, Tenant, TenantStore, WorkQueue,
};

/// Default table name.
pub const TABLE_NAME: &str = "vaani";
/// Default physical name of [`queues::CALL_EVENTS`].
pub const CALL_EVENTS_QUEUE: &str = "vaani-call-events.fifo";
/// Default physical name of [`queues::CALL_EVENTS_DLQ`].
pub const CALL_EVENTS_DLQ_QUEUE: &str = "vaani-call-events-dlq.fifo";
pub const GSI1: &str = "gsi1";
pub const GSI2: &str = "gsi2";
/// The table's TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Where the AWS adapter finds its table and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    pub table: String,
    /// Logical queue name ([`queues`]) → SQS queue URL.
    pub queue_urls: BTreeMap<String, String>,
    /// Set for moto or another local endpoint: the clients then use static test credentials
    /// and never consult the default credential chain (which would probe EC2 metadata).
    pub endpoint_url: Option<String>,
    pub region: String,
}

impl AwsConfig {
    /// A config for a local endpoint (moto), with no queues yet (see [`ensure_schema`]).
    pub fn local(endpoint_url: &str, table: &str) -> Self {
        AwsConfig {
            table: table.to_string(),
            queue_urls: BTreeMap::new(),
            endpoint_url: Some(endpoint_url.to_string()),
            region: "ap-south-1".to_string(),
        }
    }
}

/// The SDK clients for `cfg`. With an endpoint URL: static test credentials and nothing read
/// from the environment; without: the standard AWS config chain (Lambda's role credentials).
pub async fn clients(cfg: &AwsConfig) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let region = Region::new(cfg.region.clone());
    match &cfg.endpoint_url {
        Some(url) => {
            let creds = Credentials::new("vaani-test", "vaani-test", None, None, "vaani-static");
            let ddb = aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region.clone())
                .endpoint_url(url)
                .credentials_provider(creds.clone())
                .build();
            let sqs = aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new(cfg.region.clone()))
                .endpoint_url(url)
                .credentials_provider(creds)
                .build();
            (
                aws_sdk_dynamodb::Client::from_conf(ddb),
                aws_sdk_sqs::Client::from_conf(sqs),
            )
        }
        None => {
            let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(region)
                .load()
                .await;
            (
                aws_sdk_dynamodb::Client::new(&shared),
                aws_sdk_sqs::Client::new(&shared),
            )
        }
    }
}

/// The DynamoDB + SQS store.
#[derive(Clone)]
pub struct AwsStore {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
    queue_urls: BTreeMap<String, String>,
    clock: Clock,
    receive_wait_s: i32,
}

impl std::fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsStore")
            .field("table", &self.table)
            .field("queue_urls", &self.queue_urls)
            .finish_non_exhaustive()
    }
}

impl AwsStore {
    pub async fn connect(cfg: &AwsConfig) -> Self {
        let (ddb, sqs) = clients(cfg).await;
        Self::from_clients(ddb, sqs, cfg)
    }

    pub fn from_clients(
        ddb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        cfg: &AwsConfig,
    ) -> Self {
        AwsStore {
            ddb,
            sqs,
            table: cfg.table.clone(),
            queue_urls: cfg.queue_urls.clone(),
            clock: system_clock(),
            receive_wait_s: 0,
        }
    }

    /// Use `clock` for TTL decisions (SQS visibility timeouts stay in real time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Long-poll receives for up to `wait` (whole seconds, at most 20; default 0: short poll).
    pub fn with_receive_wait(mut self, wait: Duration) -> Self {
        self.receive_wait_s = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        self
    }

    /// Every port, backed by this one store.
    pub fn stores(self) -> Stores {
        let s = std::sync::Arc::new(self);
        Stores {
            calls: s.clone(),
            reports: s.clone(),
            events: s.clone(),
            tenants: s.clone(),
            nodes: s.clone(),
            counters: s.clone(),
            queue: s.clone(),
            durability: s,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn queue_url(&self, queue: &str) -> Result<&str> {
        self.queue_urls
            .get(queue)
            .map(String::as_str)
            .ok_or_else(|| StoreError::UnknownQueue(queue.to_string()))
    }

    async fn get_item(&self, pk: String, sk: String) -> Result<Option<Item>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        Ok(out.item)
    }

    /// Every item of a query (all pages).
    async fn query_all(&self, q: QuerySpec<'_>) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression(q.condition)
                .set_exclusive_start_key(start.take());
            for (k, v) in &q.values {
                req = req.expression_attribute_values(*k, v.clone());
            }
            req = match q.index {
                Some(ix) => req.index_name(ix),
                None => req.consistent_read(true),
            };
            let out = req.send().await.map_err(|e| backend("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}

type Item = HashMap<String, AttributeValue>;

struct QuerySpec<'a> {
    index: Option<&'a str>,
    condition: &'a str,
    values: Vec<(&'a str, AttributeValue)>,
}

fn backend<E: std::error::Error + 'static>(op: &str, e: E) -> StoreError {
    StoreError::Backend(format!("{op}: {}", DisplayErrorContext(&e)))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Escape an id for use inside a `#`-separated key.
fn esc(id: &str) -> Cow<'_, str> {
    if id.contains(['%', '#']) {
        Cow::Owned(id.replace('%', "%25").replace('#', "%23"))
    } else {
        Cow::Borrowed(id)
    }
}

fn call_pk(tenant: &str, call_id: &str) -> String {
    format!("T#{}#C#{}", esc(tenant), esc(call_id))
}

fn provider_key(tenant: &str, provider: Provider, provider_call_id: &str) -> String {
    format!(
        "T#{}#P#{}#{}",
        esc(tenant),
        provider.as_str(),
        esc(provider_call_id)
    )
}

const CALL_SK: &str = "CALL";
const EVENT_SK_PREFIX: &str = "EV#";
const NODE_PK: &str = "NODE";

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

fn doc<T: DeserializeOwned>(what: &str, item: &Item) -> Result<T> {
    match item.get("doc") {
        Some(AttributeValue::S(d)) => {
            serde_json::from_str(d).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
        }
        _ => Err(StoreError::Corrupt(format!("{what}: no doc attribute"))),
    }
}

fn ttl_attrs(item: &mut Item, expires_at: &DateTime<Utc>) {
    let ms = expires_at.timestamp_millis();
    // Round up: DynamoDB must never delete an item before readers consider it expired.
    item.insert(
        TTL_ATTRIBUTE.into(),
        n(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0)),
    );
    item.insert("expires_ms".into(), n(ms));
}

fn call_item(rec: &CallRecord) -> Result<Item> {
    let version = i64::try_from(rec.version)
        .map_err(|_| StoreError::Backend("version out of range".into()))?;
    let mut item = Item::new();
    item.insert("pk".into(), s(call_pk(&rec.tenant, &rec.call_id)));
    item.insert("sk".into(), s(CALL_SK));
    item.insert(
        "gsi1pk".into(),
        s(provider_key(
            &rec.tenant,
            rec.provider,
            &rec.provider_call_id,
        )),
    );
    item.insert("gsi1sk".into(), s(CALL_SK));
    item.insert("gsi2pk".into(), s(format!("CALLS#{}", esc(&rec.tenant))));
    item.insert(
        "gsi2sk".into(),
        s(format!("{}#{}", sortable_ts(&rec.created_at), rec.call_id)),
    );
    item.insert("tenant".into(), s(rec.tenant.as_str()));
    item.insert("call_id".into(), s(rec.call_id.as_str()));
    item.insert("provider".into(), s(rec.provider.as_str()));
    item.insert("provider_call_id".into(), s(rec.provider_call_id.as_str()));
    item.insert("status".into(), s(rec.state.status.as_str()));
    item.insert("created_at".into(), s(sortable_ts(&rec.created_at)));
    item.insert("updated_at".into(), s(sortable_ts(&rec.updated_at)));
    item.insert("version".into(), n(version));
    if let Some(node) = &rec.node_id {
        item.insert("node_id".into(), s(node.as_str()));
    }
    item.insert("doc".into(), s(to_json(rec)?));
    Ok(item)
}

fn event_item(ev: &StoredEvent) -> Result<Item> {
    let mut item = Item::new();
    item.insert("pk".into(), s(call_pk(&ev.tenant, &ev.call_id)));
    item.insert("sk".into(), s(format!("{EVENT_SK_PREFIX}{}", ev.event_id)));
    item.insert("received_at".into(), s(sortable_ts(&ev.received_at)));
    item.insert("enqueued".into(), AttributeValue::Bool(ev.enqueued));
    if let Some(t) = &ev.expires_at {
        ttl_attrs(&mut item, t);
    }
    item.insert("doc".into(), s(to_json(ev)?));
    Ok(item)
}

fn event_from(item: &Item) -> Result<StoredEvent> {
    let mut ev: StoredEvent = doc("event", item)?;
    if let Some(AttributeValue::Bool(b)) = item.get("enqueued") {
        ev.enqueued = *b;
    }
    Ok(ev)
}

/// Newest first: `(created_at, call_id, tenant)` descending, as the embedded adapter orders.
fn newest_first(a: &CallRecord, b: &CallRecord) -> std::cmp::Ordering {
    (b.created_at, &b.call_id, &b.tenant).cmp(&(a.created_at, &a.call_id, &a.tenant))
}

#[async_trait]
impl CallStore for AwsStore {
    async fn create_call(&self, rec: &CallRecord) -> Result<PutOutcome<CallRecord>> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(call_item(rec)?))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(PutOutcome::Inserted),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                    let existing = match c.item {
                        Some(item) => doc("call", &item)?,
                        None => self
                            .get_call(&rec.tenant, &rec.call_id)
                            .await?
                            .ok_or_else(|| StoreError::Backend("call vanished during create".into()))?,
                    };
                    Ok(PutOutcome::Exists(existing))
                }
                other => Err(backend("PutItem", other)),
            },
        }
    }

    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<CallRecord>> {
        self.get_item(call_pk(tenant, call_id), CALL_SK.into())
            .await?
            .map(|item| doc("call", &item))
            .transpose()
    }

    async fn find_call_by_provider_id(
        &self,
        tenant: &str,
        provider: Provider,
        provider_call_id: &str,
    ) -> Result<Option<CallRecord>> {
        let items = self
            .query_all(QuerySpec {
                index: Some(GSI1),
                condition: "gsi1pk = :p",
                values: vec![(":p", s(provider_key(tenant, provider, provider_call_id)))],
            })
            .await?;
        let mut calls = items
            .iter()
            .map(|i| doc::<CallRecord>("call", i))
            .collect::<Result<Vec<_>>>()?;
        calls.sort_by(newest_first);
        Ok(calls.into_iter().next())
    }

    async fn update_call(&self, rec: &CallRecord) -> Result<bool> {
        let Some(expected) = rec.version.checked_sub(1) else {
            return Ok(false);
        };
        let expected = i64::try_from(expected)
            .map_err(|_| StoreError::Backend("version out of range".into()))?;
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(call_item(rec)?))
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(expected))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(backend("PutItem", other)),
            },
        }
    }

    async fn list_calls(&self, tenant: Option<&str>, limit: usize) -> Result<Vec<CallRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut calls = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page_limit = i32::try_from(limit - calls.len()).unwrap_or(i32::MAX);
            let (items, next) = match tenant {
                Some(t) => {
                    let out = self
                        .ddb
                        .query()
                        .table_name(&self.table)
                        .index_name(GSI2)
                        .key_condition_expression("gsi2pk = :p")
                        .expression_attribute_values(":p", s(format!("CALLS#{}", esc(t))))
                        .scan_index_forward(false)
                        .limit(page_limit)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| backend("Query", e))?;
                    (out.items, out.last_evaluated_key)
                }
                // All tenants (CLI): scan the sparse calls index, sort here.
                None => {
                    let out = self
                        .ddb
                        .scan()
                        .table_name(&self.table)
                        .index_name(GSI2)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| backend("Scan", e))?;
                    (out.items, out.last_evaluated_key)
                }
            };
            for item in items.unwrap_or_default() {
                calls.push(doc::<CallRecord>("call", &item)?);
            }
            match next {
                Some(k) if !k.is_empty() && (tenant.is_none() || calls.len() < limit) => {
                    start = Some(k)
                }
                _ => break,
            }
        }
        calls.sort_by(newest_first);
        calls.truncate(limit);
        Ok(calls)
    }
}

#[async_trait]
impl CallEventStore for AwsStore {
    async fn put_event(&self, ev: &StoredEvent) -> Result<PutOutcome<StoredEvent>> {
        let now = self.now().timestamp_millis();
        // An expired event (TTL not yet swept) is as good as absent: overwrite it.
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(ev)?))
            .condition_expression("attribute_not_exists(pk) OR expires_ms <= :now")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(PutOutcome::Inserted),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                    let item = match c.item {
                        Some(item) => item,
                        None => self
                            .get_item(
                                call_pk(&ev.tenant, &ev.call_id),
                                format!("{EVENT_SK_PREFIX}{}", ev.event_id),
                            )
                            .await?
                            .ok_or_else(|| StoreError::Backend("event vanished during put".into()))?,
                    };
                    Ok(PutOutcome::Exists(event_from(&item)?))
                }
                other => Err(backend("PutItem", other)),
            },
        }
    }

    /// Marking an event that does not exist is a no-op.
    async fn mark_event_enqueued(&self, tenant: &str, call_id: &str, event_id: &str) -> Result<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(call_pk(tenant, call_id)))
            .key("sk", s(format!("{EVENT_SK_PREFIX}{event_id}")))
            .update_expression("SET #e = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#e", "enqueued")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(backend("UpdateItem", other)),
            },
        }
    }

    async fn list_events(&self, tenant: &str, call_id: &str) -> Result<Vec<StoredEvent>> {
        let now = self.now();
        let items = self
            .query_all(QuerySpec {
                index: None,
                condition: "pk = :pk AND begins_with(sk, :ev)",
                values: vec![
                    (":pk", s(call_pk(tenant, call_id))),
                    (":ev", s(EVENT_SK_PREFIX)),
                ],
            })
            .await?;
        let mut events = Vec::with_capacity(items.len());
        for item in &items {
            let ev = event_from(item)?;
            if ev.expires_at.is_some_and(|t| is_expired(&t, &now)) {
                continue;
            }
            events.push(ev);
        }
        events.sort_by(|a, b| (a.received_at, &a.event_id).cmp(&(b.received_at, &b.event_id)));
        Ok(events)
    }
}

#[async_trait]
impl TenantStore for AwsStore {
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.get_item(format!("TENANT#{}", esc(id)), "TENANT".into())
            .await?
            .map(|item| doc("tenant", &item))
            .transpose()
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<()> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("TENANT#{}", esc(&tenant.id))))
            .item("sk", s("TENANT"))
            .item("doc", s(to_json(tenant)?))
            .send()
            .await
            .map_err(|e| backend("PutItem", e))?;
        Ok(())
    }
}

/// Reports are items `REPORT#{key}` / `REPORT`, one per key (call id and transport id), so a
/// lookup by either is one consistent GetItem.
#[async_trait]
impl ReportStore for AwsStore {
    async fn put_report(&self, report: &StoredReport) -> Result<()> {
        let doc = to_json(report)?;
        let mut keys = vec![report.transport_id.as_str()];
        if let Some(c) = report
            .call_id
            .as_deref()
            .filter(|c| *c != report.transport_id)
        {
            keys.push(c);
        }
        for key in keys {
            let mut item = Item::new();
            item.insert("pk".into(), s(format!("REPORT#{}", esc(key))));
            item.insert("sk".into(), s("REPORT"));
            if let Some(t) = &report.expires_at {
                ttl_attrs(&mut item, t);
            }
            item.insert("doc".into(), s(doc.clone()));
            self.ddb
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| backend("PutItem", e))?;
        }
        Ok(())
    }

    async fn get_report(&self, id: &str) -> Result<Option<StoredReport>> {
        let now = (self.clock)();
        Ok(self
            .get_item(format!("REPORT#{}", esc(id)), "REPORT".into())
            .await?
            .map(|item| doc::<StoredReport>("report", &item))
            .transpose()?
            .filter(|r| r.expires_at.is_none_or(|t| !is_expired(&t, &now))))
    }
}

#[async_trait]
impl NodeRegistry for AwsStore {
    async fn heartbeat(&self, node: &MediaNode) -> Result<()> {
        let mut item = Item::new();
        item.insert("pk".into(), s(NODE_PK));
        item.insert("sk".into(), s(node.id.as_str()));
        ttl_attrs(&mut item, &node.expires_at);
        item.insert("doc".into(), s(to_json(node)?));
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| backend("PutItem", e))?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<MediaNode>> {
        let now = self.now();
        let items = self
            .query_all(QuerySpec {
                index: None,
                condition: "pk = :pk",
                values: vec![(":pk", s(NODE_PK))],
            })
            .await?;
        let mut nodes = Vec::with_capacity(items.len());
        for item in &items {
            let node: MediaNode = doc("node", item)?;
            if !is_expired(&node.expires_at, &now) {
                nodes.push(node);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn remove_node(&self, id: &str) -> Result<()> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(NODE_PK))
            .key("sk", s(id))
            .send()
            .await
            .map_err(|e| backend("DeleteItem", e))?;
        Ok(())
    }
}

#[async_trait]
impl Counters for AwsStore {
    async fn incr(&self, key: &str, by: i64) -> Result<i64> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("CTR#{}", esc(key))))
            .key("sk", s("CTR"))
            .update_expression("ADD #n :by")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":by", n(by))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| backend("UpdateItem", e))?;
        match out.attributes.as_ref().and_then(|a| a.get("n")) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("counter {key:?} is not an i64"))),
            _ => Err(StoreError::Corrupt(format!(
                "counter {key:?} returned no value"
            ))),
        }
    }
}

#[async_trait]
impl WorkQueue for AwsStore {
    async fn send(&self, queue: &str, body: &str, dedupe_id: Option<&str>) -> Result<()> {
        let url = self.queue_url(queue)?;
        let group = message_group(body, dedupe_id);
        let dedupe = match dedupe_id {
            Some(id) => fifo_id(id).into_owned(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(dedupe)
            .send()
            .await
            .map_err(|e| backend("SendMessage", e))?;
        Ok(())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>> {
        let url = self.queue_url(queue)?;
        let want = batch_size(max);
        if want == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(10))
            .visibility_timeout(i32::try_from(visibility_secs(visibility)).unwrap_or(i32::MAX))
            .wait_time_seconds(self.receive_wait_s)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| backend("ReceiveMessage", e))?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt("message without receive count".into()))?;
                match (m.message_id, m.receipt_handle) {
                    (Some(id), Some(receipt)) => Ok(QueueMessage {
                        id,
                        receipt,
                        body: m.body.unwrap_or_default(),
                        receive_count,
                    }),
                    _ => Err(StoreError::Corrupt("message without id or receipt".into())),
                }
            })
            .collect()
    }

    /// An unknown or already-used receipt is a no-op.
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        let url = self.queue_url(queue)?;
        match self.sqs.delete_message().queue_url(url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                aws_sdk_sqs::operation::delete_message::DeleteMessageError::ReceiptHandleIsInvalid(_) => Ok(()),
                other => Err(backend("DeleteMessage", other)),
            },
        }
    }

    /// A message not in flight under `receipt` is left alone (no error), as embedded does.
    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<()> {
        use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError as E;
        let url = self.queue_url(queue)?;
        let res = self
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(visibility_secs(visibility)).unwrap_or(i32::MAX))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                E::MessageNotInflight(_) | E::ReceiptHandleIsInvalid(_) => Ok(()),
                other => Err(backend("ChangeMessageVisibility", other)),
            },
        }
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let url = self.queue_url(queue)?;
        self.sqs
            .purge_queue()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| backend("PurgeQueue", e))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Schema

/// A queue to create: its logical name, SQS name (must end in `.fifo`) and redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical: String,
    pub name: String,
    pub redrive: Option<Redrive>,
}

/// Move a message to `dlq` (a logical name) when it would be received `max_receives + 1` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dlq: String,
    pub max_receives: u32,
}

impl QueueSpec {
    /// The production queues: `vaani-call-events.fifo` redriving to
    /// `vaani-call-events-dlq.fifo` after [`queues::DEFAULT_MAX_RECEIVES`] receives.
    pub fn defaults() -> Vec<QueueSpec> {
        Self::call_events("", queues::DEFAULT_MAX_RECEIVES)
    }

    /// The call-events queue and its DLQ, with `suffix` before `.fifo` (tests: unique names).
    pub fn call_events(suffix: &str, max_receives: u32) -> Vec<QueueSpec> {
        let name = |base: &str| format!("{}{suffix}.fifo", base.trim_end_matches(".fifo"));
        vec![
            QueueSpec {
                logical: queues::CALL_EVENTS_DLQ.into(),
                name: name(CALL_EVENTS_DLQ_QUEUE),
                redrive: None,
            },
            QueueSpec {
                logical: queues::CALL_EVENTS.into(),
                name: name(CALL_EVENTS_QUEUE),
                redrive: Some(Redrive {
                    dlq: queues::CALL_EVENTS_DLQ.into(),
                    max_receives,
                }),
            },
        ]
    }
}

/// Create (idempotently) the table with both GSIs and TTL, and `queues` with their redrive
/// policies. Returns `cfg` with the queues' URLs added. This is the reference for the CDK stack.
pub async fn ensure_schema(cfg: &AwsConfig, queue_specs: &[QueueSpec]) -> Result<AwsConfig> {
    let (ddb, sqs) = clients(cfg).await;
    ensure_table(&ddb, &cfg.table).await?;
    let mut out = cfg.clone();
    for spec in queue_specs {
        if !spec.name.ends_with(".fifo") {
            return Err(StoreError::Backend(format!(
                "queue {:?} must be FIFO (name ending in .fifo)",
                spec.name
            )));
        }
        let url = ensure_fifo_queue(&sqs, &spec.name).await?;
        out.queue_urls.insert(spec.logical.clone(), url);
    }
    for spec in queue_specs {
        let Some(redrive) = &spec.redrive else {
            continue;
        };
        let dlq_url = out
            .queue_urls
            .get(&redrive.dlq)
            .ok_or_else(|| StoreError::UnknownQueue(redrive.dlq.clone()))?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| backend("GetQueueAttributes", e))?;
        let arn = attrs
            .attributes
            .as_ref()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .ok_or_else(|| StoreError::Backend("DLQ has no ARN".into()))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": redrive.max_receives.to_string(),
        });
        let url = out
            .queue_urls
            .get(&spec.logical)
            .ok_or_else(|| StoreError::UnknownQueue(spec.logical.clone()))?;
        sqs.set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .map_err(|e| backend("SetQueueAttributes", e))?;
    }
    Ok(out)
}

async fn ensure_fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => {
            return out
                .queue_url
                .ok_or_else(|| StoreError::Backend("GetQueueUrl returned no URL".into()))
        }
        Err(e) => match e.into_service_error() {
            GetQueueUrlError::QueueDoesNotExist(_) => {}
            other => return Err(backend("GetQueueUrl", other)),
        },
    }
    let out = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .send()
        .await
        .map_err(|e| backend("CreateQueue", e))?;
    out.queue_url
        .ok_or_else(|| StoreError::Backend("CreateQueue returned no URL".into()))
}

fn key_attr(name: &str, key: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key)
        .build()
        .map_err(|e| backend("KeySchemaElement", e))
}

fn gsi(name: &str) -> Result<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_attr(&format!("{name}pk"), KeyType::Hash)?)
        .key_schema(key_attr(&format!("{name}sk"), KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| backend("GlobalSecondaryIndex", e))
}

async fn ensure_table(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    use aws_sdk_dynamodb::operation::create_table::CreateTableError;
    let mut req = ddb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key_attr("pk", KeyType::Hash)?)
        .key_schema(key_attr("sk", KeyType::Range)?)
        .global_secondary_indexes(gsi(GSI1)?)
        .global_secondary_indexes(gsi(GSI2)?);
    for attr in ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| backend("AttributeDefinition", e))?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) => match e.into_service_error() {
            CreateTableError::ResourceInUseException(_) => {}
            other => return Err(backend("CreateTable", other)),
        },
    }
    // Wait until the table and its indexes are usable.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let out = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| backend("DescribeTable", e))?;
        let t = out
            .table
            .ok_or_else(|| StoreError::Backend("DescribeTable returned no table".into()))?;
        let indexes = t.global_secondary_indexes.unwrap_or_default();
        for want in [GSI1, GSI2] {
            if !indexes
                .iter()
                .any(|i| i.index_name.as_deref() == Some(want))
            {
                return Err(StoreError::Backend(format!(
                    "table {table:?} exists without index {want:?}"
                )));
            }
        }
        let ready = t.table_status == Some(TableStatus::Active)
            && indexes
                .iter()
                .all(|i| matches!(i.index_status, None | Some(IndexStatus::Active)));
        if ready {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(StoreError::Backend(format!(
                "table {table:?} did not become active"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ttl = ddb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| backend("DescribeTimeToLive", e))?;
    let desc = ttl.time_to_live_description;
    let status = desc.as_ref().and_then(|d| d.time_to_live_status.clone());
    let attr = desc.as_ref().and_then(|d| d.attribute_name.as_deref());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            if attr != Some(TTL_ATTRIBUTE) {
                return Err(StoreError::Backend(format!(
                    "table {table:?} has TTL on {attr:?}, expected {TTL_ATTRIBUTE:?}"
                )));
            }
        }
        _ => {
            ddb.update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(TTL_ATTRIBUTE)
                        .build()
                        .map_err(|e| backend("TimeToLiveSpecification", e))?,
                )
                .send()
                .await
                .map_err(|e| backend("UpdateTimeToLive", e))?;
        }
    }
    Ok(())
}

/// Every DynamoDB and SQS write is durable when its call returns.
#[async_trait::async_trait]
impl crate::Durability for AwsStore {
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_separators() {
        assert_ne!(call_pk("a#C#b", "c"), call_pk("a", "b#C#c"));
        assert_eq!(call_pk("t1", "c1"), "T#t1#C#c1");
        assert_eq!(call_pk("a%23", "b"), "T#a%2523#C#b");
        assert_ne!(call_pk("a%23", "b"), call_pk("a#", "b"));
        assert_eq!(
            provider_key("t", Provider::Twilio, "CA1"),
            "T#t#P#twilio#CA1"
        );
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        let mut item = Item::new();
        let t = DateTime::from_timestamp_millis(10_001).unwrap_or_default();
        ttl_attrs(&mut item, &t);
        assert_eq!(item.get(TTL_ATTRIBUTE), Some(&n(11)));
        assert_eq!(item.get("expires_ms"), Some(&n(10_001)));
        let t = DateTime::from_timestamp_millis(10_000).unwrap_or_default();
        ttl_attrs(&mut item, &t);
        assert_eq!(item.get(TTL_ATTRIBUTE), Some(&n(10)));
    }

    #[test]
    fn default_queue_names() {
        let specs = QueueSpec::defaults();
        assert_eq!(specs[0].name, CALL_EVENTS_DLQ_QUEUE);
        assert_eq!(specs[1].name, CALL_EVENTS_QUEUE);
        let t = QueueSpec::call_events("-x1", 2);
        assert_eq!(t[1].name, "vaani-call-events-x1.fifo");
        assert_eq!(
            t[1].redrive,
            Some(Redrive {
                dlq: queues::CALL_EVENTS_DLQ.into(),
                max_receives: 2
            })
        );
    }
}
