//! Embedded adapter: every port in one SQLite file (bundled SQLite, WAL mode).
//!
//! Used by `vaani dev` and by tests. It keeps DynamoDB's and SQS's semantics, checked by the
//! same contract suite as the AWS adapter: create-if-absent, compare-and-swap on `version`,
//! atomic counters, TTL (expired rows are invisible, then deleted when next touched), and a
//! FIFO queue with visibility timeouts, fresh receipt handles per receive, dedupe ids,
//! per-call message groups and redrive to a dead-letter queue after `max_receives` receives.
//!
//! Why calls run inline on the async task: every operation is a few prepared statements on
//! one connection behind a mutex, a few microseconds each. Handing each to another thread
//! (`spawn_blocking` / `block_in_place`) would cost more than the work and would tie the store
//! to multi-threaded runtimes.
//!
//! Group commit: a SQLite commit costs far more than the statements in it (measured here: ~30 µs
//! per commit in WAL mode against ~3 µs per insert inside a transaction). So by default writes
//! join an open transaction that is committed at most [`DEFAULT_COMMIT_WINDOW`] after it began
//! (by the next write past the deadline, or by a background flusher when idle). Every read and
//! conditional write of this process sees all earlier writes at once; other processes (the
//! `vaani` CLI) see them within the window; a crash loses at most the window. Each operation
//! is still atomic (a savepoint). [`OpenOptions::commit_window`] `= None` commits every write.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vaani_events::Provider;

use crate::common::{batch_size, is_expired, message_group, sortable_ts, visibility_secs};
use crate::{
    queues, system_clock, CallEventStore, CallRecord, CallStore, Clock, Counters, MediaNode,
    NodeRegistry, PutOutcome, QueueMessage, ReportStore, Result, StoreError, StoredEvent,
    StoredReport, Stores, Tenant, TenantStore, WorkQueue,
};

/// File name inside the directory given to [`EmbeddedStore::open`].
pub const DB_FILE: &str = "vaani.db";

/// Longest time a write waits to be committed (see the module docs).
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_millis(5);

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE calls (
    tenant           TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_call_id TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    version          INTEGER NOT NULL,
    doc              TEXT NOT NULL
);
-- Rowid tables with unique indexes, not WITHOUT ROWID: the JSON docs are large, and in a
-- clustered table every insert with a random key splits pages full of docs.
CREATE UNIQUE INDEX calls_key ON calls (tenant, call_id);
CREATE INDEX calls_by_provider ON calls (tenant, provider, provider_call_id, created_at, call_id);
CREATE INDEX calls_by_tenant_created ON calls (tenant, created_at, call_id);

CREATE TABLE events (
    tenant      TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    enqueued    INTEGER NOT NULL,
    expires_ms  INTEGER,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX events_key ON events (tenant, call_id, event_id);

CREATE TABLE tenants (
    id  TEXT PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE nodes (
    id         TEXT PRIMARY KEY NOT NULL,
    expires_ms INTEGER NOT NULL,
    doc        TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE counters (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE queues (
    name         TEXT PRIMARY KEY NOT NULL,
    max_receives INTEGER,
    dlq          TEXT
) WITHOUT ROWID;

CREATE TABLE messages (
    -- New rows always get max(seq)+1, so FIFO order holds without AUTOINCREMENT's extra write.
    seq           INTEGER PRIMARY KEY,
    queue         TEXT NOT NULL,
    msg_id        TEXT NOT NULL,
    grp           TEXT NOT NULL,
    body          TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    visible_ms    INTEGER NOT NULL,
    receipt       TEXT
);
CREATE INDEX messages_by_visibility ON messages (queue, visible_ms);

CREATE TABLE dedupe (
    queue     TEXT NOT NULL,
    dedupe_id TEXT NOT NULL,
    PRIMARY KEY (queue, dedupe_id)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE reports (
    key        TEXT PRIMARY KEY NOT NULL,
    expires_ms INTEGER,
    doc        TEXT NOT NULL
) WITHOUT ROWID;
"#,
];

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Group commit window; `None` commits every write before it returns.
    pub commit_window: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            commit_window: Some(DEFAULT_COMMIT_WINDOW),
        }
    }
}

/// The embedded store. Share it as [`Stores`] (see [`EmbeddedStore::stores`]).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    clock: Clock,
}

struct Inner {
    db: Mutex<Db>,
    window: Option<Duration>,
}

struct Db {
    conn: Connection,
    /// When the open group-commit transaction began.
    open_since: Option<Instant>,
    /// Number of the open (or last) transaction, for [`Durability::sync`].
    txn: u64,
    /// Recent transactions whose commit failed (rolled back), newest last.
    failed: std::collections::VecDeque<u64>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("commit_window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(db)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_i64(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{what} out of range")))
}

/// Nothing in SQLite's `LIMIT` needs more than `i64::MAX` rows.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn visibility_ms(d: Duration) -> i64 {
    i64::try_from(visibility_secs(d) * 1000).unwrap_or(i64::MAX)
}

impl Db {
    fn commit(&mut self) -> Result<()> {
        self.open_since = None;
        if self.conn.is_autocommit() {
            return Ok(());
        }
        exec(&self.conn, "COMMIT").inspect_err(|e| {
            tracing::error!(error = %e, "embedded store: commit failed, rolling back");
            let _ = exec(&self.conn, "ROLLBACK");
            if self.failed.len() == 64 {
                self.failed.pop_front();
            }
            self.failed.push_back(self.txn);
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock leaves no half-done operation behind: each one runs in
        // a savepoint, rolled back unless released.
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let db = self.db.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = db.commit() {
            tracing::error!(error = %e, "embedded store: final commit failed");
        }
    }
}

impl Drop for EmbeddedStore {
    /// Commit on the dropping thread, so that whoever drops the last handle finds its writes in
    /// the file (the flusher may hold `Inner` a moment longer).
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "embedded store: final commit failed");
        }
    }
}

impl EmbeddedStore {
    /// Open (creating it if needed) `dir/vaani.db`, in WAL mode, migrated to the current schema,
    /// with group commit ([`DEFAULT_COMMIT_WINDOW`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, OpenOptions::default())
    }

    pub fn open_with(dir: &Path, opts: OpenOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join(DB_FILE)).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(db)?;
        let store = Self::setup(conn, opts.commit_window)?;
        if let Some(window) = opts.commit_window {
            spawn_flusher(Arc::downgrade(&store.inner), window)?;
        }
        Ok(store)
    }

    /// A private in-memory database (tests, benchmarks, one-shot tools). Nothing outside this
    /// process can see it, so its group commit needs no flusher.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(
            Connection::open_in_memory().map_err(db)?,
            Some(DEFAULT_COMMIT_WINDOW),
        )
    }

    fn setup(mut conn: Connection, window: Option<Duration>) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        // Read through a memory map: without it every page miss is a pread copy out of the OS
        // cache, which dominated the webhook benchmark. (A bigger page cache made commits
        // slower: SQLite walks the whole cache when a transaction ends.)
        conn.pragma_update(None, "mmap_size", 256i64 * 1024 * 1024)
            .map_err(db)?;
        // Checkpoint the WAL every ~64 MiB instead of every 4 MiB: hot index pages dirtied by
        // many commits are then copied into the database once, not once per few commits.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384i64)
            .map_err(db)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: Mutex::new(Db {
                    conn,
                    open_since: None,
                    txn: 0,
                    failed: std::collections::VecDeque::new(),
                }),
                window,
            }),
            clock: system_clock(),
        })
    }

    /// Use `clock` for TTL and queue visibility (tests advance it instead of sleeping).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Every port, backed by this one store.
    pub fn stores(self) -> Stores {
        let s = Arc::new(self);
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

    /// Commit pending writes now (e.g. before the process exits).
    pub fn flush(&self) -> Result<()> {
        self.inner.lock().commit()
    }

    /// Create or reconfigure queue `name`. With `redrive = Some((dlq, max_receives))`, a
    /// message about to be received for the `max_receives + 1`th time moves to queue `dlq`
    /// (which must exist) instead. New stores have [`queues::CALL_EVENTS`] (redriving to
    /// [`queues::CALL_EVENTS_DLQ`] after [`queues::DEFAULT_MAX_RECEIVES`]) and the DLQ itself.
    pub fn configure_queue(&self, name: &str, redrive: Option<(&str, u32)>) -> Result<()> {
        self.write(|c| {
            if let Some((dlq, max)) = redrive {
                if dlq == name || queue_config(c, dlq).is_err() {
                    return Err(StoreError::UnknownQueue(dlq.to_string()));
                }
                if max == 0 {
                    return Err(StoreError::Backend("max_receives must be at least 1".into()));
                }
            }
            c.prepare_cached(
                "INSERT INTO queues (name, max_receives, dlq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET max_receives = excluded.max_receives, dlq = excluded.dlq",
            )
            .and_then(|mut s| s.execute(params![name, redrive.map(|r| r.1), redrive.map(|r| r.0)]))
            .map_err(db)?;
            Ok(())
        })
    }

    /// Delete every expired event and node now (reads already skip them). Returns rows removed.
    pub fn purge_expired(&self) -> Result<usize> {
        let now = self.now().timestamp_millis();
        self.write(|c| {
            let events = c
                .prepare_cached(
                    "DELETE FROM events WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
                )
                .and_then(|mut s| s.execute([now]))
                .map_err(db)?;
            let nodes = c
                .prepare_cached("DELETE FROM nodes WHERE expires_ms <= ?1")
                .and_then(|mut s| s.execute([now]))
                .map_err(db)?;
            Ok(events + nodes)
        })
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        f(&self.inner.lock().conn)
    }

    /// Run `f` atomically inside the (group-commit) write transaction.
    fn write<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        self.write_with(true, f)
    }

    /// A write whose closure changes rows with at most one statement (reads around it are
    /// fine). SQLite makes every statement atomic on its own, so no savepoint is needed:
    /// two fewer statements on the webhook hot path for every such write.
    fn write_one<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        self.write_with(false, f)
    }

    fn write_with<R>(
        &self,
        savepoint: bool,
        f: impl FnOnce(&Connection) -> Result<R>,
    ) -> Result<R> {
        let mut g = self.inner.lock();
        if g.conn.is_autocommit() {
            exec(&g.conn, "BEGIN IMMEDIATE")?;
            g.open_since = Some(Instant::now());
            g.txn += 1;
        }
        if savepoint {
            exec(&g.conn, "SAVEPOINT op")?;
        }
        let res = f(&g.conn);
        if savepoint {
            if res.is_ok() {
                exec(&g.conn, "RELEASE op")?;
            } else {
                exec(&g.conn, "ROLLBACK TO op")?;
                exec(&g.conn, "RELEASE op")?;
            }
        }
        let due = match self.inner.window {
            None => true,
            Some(w) => g.open_since.is_none_or(|t| t.elapsed() >= w),
        };
        if due {
            g.commit()?;
        }
        res
    }
}

fn spawn_flusher(inner: Weak<Inner>, window: Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("vaani-store-flush".into())
        .spawn(move || loop {
            std::thread::sleep(window);
            let Some(inner) = inner.upgrade() else { break };
            let mut g = inner.lock();
            if g.open_since.is_some_and(|t| t.elapsed() >= window) {
                // Errors are logged by commit; the next write starts a new transaction.
                let _ = g.commit();
            }
        })
        .map(drop)
        .map_err(|e| StoreError::Backend(format!("cannot start the commit flusher: {e}")))
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if applied > known {
        return Err(StoreError::Backend(format!(
            "database schema version {applied} is newer than this build ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        if i == 0 {
            tx.execute(
                "INSERT INTO queues (name, max_receives, dlq) VALUES (?1, NULL, NULL), (?2, ?3, ?1)",
                params![
                    queues::CALL_EVENTS_DLQ,
                    queues::CALL_EVENTS,
                    queues::DEFAULT_MAX_RECEIVES
                ],
            )
            .map_err(db)?;
        }
        tx.pragma_update(None, "user_version", i + 1).map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn get_call(c: &Connection, tenant: &str, call_id: &str) -> Result<Option<CallRecord>> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM calls WHERE tenant = ?1 AND call_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, call_id], |r| r.get(0))
                .optional()
        })
        .map_err(db)?;
    doc.map(|d| from_json("call", &d)).transpose()
}

fn get_event(
    c: &Connection,
    tenant: &str,
    call_id: &str,
    event_id: &str,
) -> Result<Option<StoredEvent>> {
    let row: Option<(String, bool)> = c
        .prepare_cached(
            "SELECT doc, enqueued FROM events WHERE tenant = ?1 AND call_id = ?2 AND event_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant, call_id, event_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db)?;
    row.map(|(doc, enqueued)| {
        let mut ev: StoredEvent = from_json("event", &doc)?;
        ev.enqueued = enqueued;
        Ok(ev)
    })
    .transpose()
}

/// `(max_receives, dlq)` of a configured queue.
fn queue_config(c: &Connection, queue: &str) -> Result<(Option<u32>, Option<String>)> {
    c.prepare_cached("SELECT max_receives, dlq FROM queues WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([queue], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?
        .ok_or_else(|| StoreError::UnknownQueue(queue.to_string()))
}

/// Receipts are `{seq}.{random}`: the row to touch, and proof of the latest receive.
fn receipt_seq(receipt: &str) -> Option<i64> {
    receipt
        .split_once('.')
        .and_then(|(seq, _)| seq.parse().ok())
}

#[async_trait]
impl CallStore for EmbeddedStore {
    async fn create_call(&self, rec: &CallRecord) -> Result<PutOutcome<CallRecord>> {
        let doc = to_json(rec)?;
        let version = to_i64("version", rec.version)?;
        self.write_one(|c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO calls (tenant, call_id, provider, provider_call_id, created_at, version, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, call_id) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        rec.tenant,
                        rec.call_id,
                        rec.provider.as_str(),
                        rec.provider_call_id,
                        sortable_ts(&rec.created_at),
                        version,
                        doc
                    ])
                })
                .map_err(db)?;
            if n == 1 {
                return Ok(PutOutcome::Inserted);
            }
            get_call(c, &rec.tenant, &rec.call_id)?
                .map(PutOutcome::Exists)
                .ok_or_else(|| StoreError::Backend("call vanished during create".into()))
        })
    }

    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<CallRecord>> {
        self.read(|c| get_call(c, tenant, call_id))
    }

    async fn find_call_by_provider_id(
        &self,
        tenant: &str,
        provider: Provider,
        provider_call_id: &str,
    ) -> Result<Option<CallRecord>> {
        let doc: Option<String> = self.read(|c| {
            c.prepare_cached(
                "SELECT doc FROM calls WHERE tenant = ?1 AND provider = ?2 AND provider_call_id = ?3
                 ORDER BY created_at DESC, call_id DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, provider.as_str(), provider_call_id], |r| r.get(0))
                    .optional()
            })
            .map_err(db)
        })?;
        doc.map(|d| from_json("call", &d)).transpose()
    }

    /// Replace the call iff the stored version is `rec.version - 1`.
    async fn update_call(&self, rec: &CallRecord) -> Result<bool> {
        let Some(expected) = rec.version.checked_sub(1) else {
            return Ok(false);
        };
        let doc = to_json(rec)?;
        let version = to_i64("version", rec.version)?;
        let expected = to_i64("version", expected)?;
        let n = self.write_one(|c| {
            c.prepare_cached(
                "UPDATE calls SET provider = ?3, provider_call_id = ?4, created_at = ?5, version = ?6, doc = ?7
                 WHERE tenant = ?1 AND call_id = ?2 AND version = ?8",
            )
            .and_then(|mut s| {
                s.execute(params![
                    rec.tenant,
                    rec.call_id,
                    rec.provider.as_str(),
                    rec.provider_call_id,
                    sortable_ts(&rec.created_at),
                    version,
                    doc,
                    expected,
                ])
            })
            .map_err(db)
        })?;
        Ok(n == 1)
    }

    async fn list_calls(&self, tenant: Option<&str>, n: usize) -> Result<Vec<CallRecord>> {
        let docs: Vec<String> = self.read(|c| {
            match tenant {
                Some(t) => c
                    .prepare_cached(
                        "SELECT doc FROM calls WHERE tenant = ?1
                         ORDER BY created_at DESC, call_id DESC LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![t, limit(n)], |r| r.get(0))?
                            .collect::<rusqlite::Result<_>>()
                    }),
                // All tenants (CLI): a scan and a sort, like the AWS adapter's.
                None => c
                    .prepare_cached(
                        "SELECT doc FROM calls
                         ORDER BY created_at DESC, call_id DESC, tenant DESC LIMIT ?1",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![limit(n)], |r| r.get(0))?
                            .collect::<rusqlite::Result<_>>()
                    }),
            }
            .map_err(db)
        })?;
        docs.iter().map(|d| from_json("call", d)).collect()
    }
}

#[async_trait]
impl CallEventStore for EmbeddedStore {
    async fn put_event(&self, ev: &StoredEvent) -> Result<PutOutcome<StoredEvent>> {
        let now = self.now().timestamp_millis();
        let doc = to_json(ev)?;
        self.write_one(|c| {
            // An expired event is as good as absent: overwrite it.
            let n = c
                .prepare_cached(
                    "INSERT INTO events (tenant, call_id, event_id, received_at, enqueued, expires_ms, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, call_id, event_id) DO UPDATE SET
                        received_at = excluded.received_at, enqueued = excluded.enqueued,
                        expires_ms = excluded.expires_ms, doc = excluded.doc
                     WHERE events.expires_ms IS NOT NULL AND events.expires_ms <= ?8",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        ev.tenant,
                        ev.call_id,
                        ev.event_id,
                        sortable_ts(&ev.received_at),
                        ev.enqueued,
                        ev.expires_at.map(|t| t.timestamp_millis()),
                        doc,
                        now
                    ])
                })
                .map_err(db)?;
            if n == 1 {
                return Ok(PutOutcome::Inserted);
            }
            get_event(c, &ev.tenant, &ev.call_id, &ev.event_id)?
                .map(PutOutcome::Exists)
                .ok_or_else(|| StoreError::Backend("event vanished during put".into()))
        })
    }

    /// Marking an event that does not exist is a no-op.
    async fn mark_event_enqueued(&self, tenant: &str, call_id: &str, event_id: &str) -> Result<()> {
        self.write_one(|c| {
            c.prepare_cached(
                "UPDATE events SET enqueued = 1 WHERE tenant = ?1 AND call_id = ?2 AND event_id = ?3",
            )
            .and_then(|mut s| s.execute(params![tenant, call_id, event_id]))
            .map_err(db)
        })?;
        Ok(())
    }

    async fn list_events(&self, tenant: &str, call_id: &str) -> Result<Vec<StoredEvent>> {
        let now = self.now().timestamp_millis();
        let rows: Vec<(String, bool)> = self.write(|c| {
            c.prepare_cached(
                "DELETE FROM events WHERE tenant = ?1 AND call_id = ?2
                 AND expires_ms IS NOT NULL AND expires_ms <= ?3",
            )
            .and_then(|mut s| s.execute(params![tenant, call_id, now]))
            .map_err(db)?;
            c.prepare_cached(
                "SELECT doc, enqueued FROM events WHERE tenant = ?1 AND call_id = ?2
                 ORDER BY received_at, event_id",
            )
            .and_then(|mut s| {
                s.query_map(params![tenant, call_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(db)
        })?;
        rows.into_iter()
            .map(|(doc, enqueued)| {
                let mut ev: StoredEvent = from_json("event", &doc)?;
                ev.enqueued = enqueued;
                Ok(ev)
            })
            .collect()
    }
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let doc: Option<String> = self.read(|c| {
            c.prepare_cached("SELECT doc FROM tenants WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
                .map_err(db)
        })?;
        doc.map(|d| from_json("tenant", &d)).transpose()
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<()> {
        let doc = to_json(tenant)?;
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO tenants (id, doc) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            )
            .and_then(|mut s| s.execute(params![tenant.id, doc]))
            .map_err(db)
        })?;
        Ok(())
    }
}

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn put_report(&self, report: &StoredReport) -> Result<()> {
        let doc = to_json(report)?;
        let expires = report.expires_at.map(|t| t.timestamp_millis());
        let mut keys = vec![report.transport_id.as_str()];
        if let Some(c) = report
            .call_id
            .as_deref()
            .filter(|c| *c != report.transport_id)
        {
            keys.push(c);
        }
        self.write(|c| {
            for key in &keys {
                c.prepare_cached(
                    "INSERT INTO reports (key, expires_ms, doc) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET expires_ms = excluded.expires_ms, doc = excluded.doc",
                )
                .and_then(|mut s| s.execute(params![key, expires, doc]))
                .map_err(db)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    async fn get_report(&self, id: &str) -> Result<Option<StoredReport>> {
        let doc: Option<String> = self.read(|c| {
            c.prepare_cached("SELECT doc FROM reports WHERE key = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
                .map_err(db)
        })?;
        let report: Option<StoredReport> = doc.map(|d| from_json("report", &d)).transpose()?;
        let now = (self.clock)();
        Ok(report.filter(|r| r.expires_at.is_none_or(|t| t > now)))
    }
}

#[async_trait]
impl NodeRegistry for EmbeddedStore {
    async fn heartbeat(&self, node: &MediaNode) -> Result<()> {
        let doc = to_json(node)?;
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO nodes (id, expires_ms, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms, doc = excluded.doc",
            )
            .and_then(|mut s| {
                s.execute(params![node.id, node.expires_at.timestamp_millis(), doc])
            })
            .map_err(db)
        })?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<MediaNode>> {
        let now = self.now();
        let docs: Vec<String> = self.write(|c| {
            c.prepare_cached("DELETE FROM nodes WHERE expires_ms <= ?1")
                .and_then(|mut s| s.execute([now.timestamp_millis()]))
                .map_err(db)?;
            c.prepare_cached("SELECT doc FROM nodes ORDER BY id")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(db)
        })?;
        let nodes = docs
            .iter()
            .map(|d| from_json::<MediaNode>("node", d))
            .collect::<Result<Vec<_>>>()?;
        Ok(nodes
            .into_iter()
            .filter(|n| !is_expired(&n.expires_at, &now))
            .collect())
    }

    async fn remove_node(&self, id: &str) -> Result<()> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM nodes WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(db)
        })?;
        Ok(())
    }
}

#[async_trait]
impl Counters for EmbeddedStore {
    async fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO counters (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = value + excluded.value RETURNING value",
            )
            .and_then(|mut s| s.query_row(params![key, by], |r| r.get(0)))
            .map_err(db)
        })
    }
}

#[async_trait]
impl WorkQueue for EmbeddedStore {
    async fn send(&self, queue: &str, body: &str, dedupe_id: Option<&str>) -> Result<()> {
        let group = message_group(body, dedupe_id);
        let msg_id = uuid::Uuid::new_v4().to_string();
        self.write(|c| {
            queue_config(c, queue)?;
            if let Some(id) = dedupe_id {
                let fresh = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO dedupe (queue, dedupe_id) VALUES (?1, ?2)",
                    )
                    .and_then(|mut s| s.execute(params![queue, id]))
                    .map_err(db)?;
                if fresh == 0 {
                    // Accepted and dropped, as SQS FIFO does within its dedupe window.
                    return Ok(());
                }
            }
            c.prepare_cached(
                "INSERT INTO messages (queue, msg_id, grp, body, receive_count, visible_ms, receipt)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, NULL)",
            )
            .and_then(|mut s| s.execute(params![queue, msg_id, group, body]))
            .map_err(db)?;
            Ok(())
        })
    }

    /// At most 10 messages (as SQS); visibility in whole seconds, rounded up (as SQS).
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>> {
        let want = batch_size(max);
        let now = self.now().timestamp_millis();
        let until = now.saturating_add(visibility_ms(visibility));
        self.write(|c| {
            let (max_receives, dlq) = queue_config(c, queue)?;
            let mut out = Vec::new();
            if want == 0 {
                return Ok(out);
            }
            // FIFO: a group with a message in flight delivers nothing more until that one is
            // deleted or visible again.
            let locked: HashSet<String> = c
                .prepare_cached(
                    "SELECT DISTINCT grp FROM messages
                     WHERE queue = ?1 AND visible_ms > ?2 AND receipt IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.query_map(params![queue, now], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(db)?;
            let mut after = 0i64;
            loop {
                type Row = (i64, String, String, String, u32);
                let batch: Vec<Row> = c
                    .prepare_cached(
                        "SELECT seq, msg_id, grp, body, receive_count FROM messages
                         WHERE queue = ?1 AND visible_ms <= ?2 AND seq > ?3 ORDER BY seq LIMIT 64",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![queue, now, after], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })?
                        .collect::<rusqlite::Result<_>>()
                    })
                    .map_err(db)?;
                let Some(last) = batch.last() else {
                    return Ok(out);
                };
                after = last.0;
                for (seq, msg_id, grp, body, count) in batch {
                    if locked.contains(&grp) {
                        continue;
                    }
                    if let (Some(max_r), Some(dlq)) = (max_receives, dlq.as_deref()) {
                        if count >= max_r {
                            // Redrive, keeping the message id and receive count (as SQS does).
                            c.prepare_cached(
                                "INSERT INTO messages (queue, msg_id, grp, body, receive_count, visible_ms, receipt)
                                 VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL)",
                            )
                            .and_then(|mut s| s.execute(params![dlq, msg_id, grp, body, count]))
                            .map_err(db)?;
                            c.prepare_cached("DELETE FROM messages WHERE seq = ?1")
                                .and_then(|mut s| s.execute([seq]))
                                .map_err(db)?;
                            continue;
                        }
                    }
                    let receipt = format!("{seq}.{}", uuid::Uuid::new_v4().simple());
                    let count = count.saturating_add(1);
                    c.prepare_cached(
                        "UPDATE messages SET receive_count = ?2, visible_ms = ?3, receipt = ?4 WHERE seq = ?1",
                    )
                    .and_then(|mut s| s.execute(params![seq, count, until, receipt]))
                    .map_err(db)?;
                    out.push(QueueMessage {
                        id: msg_id,
                        receipt,
                        body,
                        receive_count: count,
                    });
                    if out.len() >= want {
                        return Ok(out);
                    }
                }
            }
        })
    }

    /// A stale receipt (the message was received again since) or an unknown one is a no-op.
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        self.write(|c| {
            queue_config(c, queue)?;
            let Some(seq) = receipt_seq(receipt) else {
                return Ok(());
            };
            c.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")
                .and_then(|mut s| s.execute(params![seq, queue, receipt]))
                .map_err(db)?;
            Ok(())
        })
    }

    /// Only a message in flight under this receipt changes; anything else is a no-op.
    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<()> {
        let now = self.now().timestamp_millis();
        let until = now.saturating_add(visibility_ms(visibility));
        self.write(|c| {
            queue_config(c, queue)?;
            let Some(seq) = receipt_seq(receipt) else {
                return Ok(());
            };
            c.prepare_cached(
                "UPDATE messages SET visible_ms = ?4
                 WHERE seq = ?1 AND queue = ?2 AND receipt = ?3 AND visible_ms > ?5",
            )
            .and_then(|mut s| s.execute(params![seq, queue, receipt, until, now]))
            .map_err(db)?;
            Ok(())
        })
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        self.write(|c| {
            queue_config(c, queue)?;
            c.prepare_cached("DELETE FROM messages WHERE queue = ?1")
                .and_then(|mut s| s.execute([queue]))
                .map_err(db)?;
            Ok(())
        })
    }
}

/// Group commit: the caller's writes are in the open transaction (or already committed).
/// Yield once so other ready requests can add theirs, then commit them all together, unless
/// someone else already did. Under concurrent load one commit covers many webhooks; a lone
/// request pays for one commit.
#[async_trait]
impl crate::Durability for EmbeddedStore {
    async fn sync(&self) -> Result<()> {
        let mine = {
            let g = self.inner.lock();
            if g.conn.is_autocommit() {
                return if g.failed.contains(&g.txn) {
                    Err(StoreError::Backend("commit failed; retry".into()))
                } else {
                    Ok(())
                };
            }
            g.txn
        };
        tokio::task::yield_now().await;
        let mut g = self.inner.lock();
        if g.txn == mine && !g.conn.is_autocommit() {
            g.commit()?;
        }
        if g.failed.contains(&mine) {
            return Err(StoreError::Backend("commit failed; retry".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_name_their_row() {
        assert_eq!(receipt_seq("42.abc"), Some(42));
        assert_eq!(receipt_seq("42"), None);
        assert_eq!(receipt_seq("x.y"), None);
        assert_eq!(receipt_seq(""), None);
    }

    #[test]
    fn provider_lookup_uses_its_index() {
        let s = EmbeddedStore::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let plan: Vec<String> = s
            .read(|c| {
                c.prepare(
                    "EXPLAIN QUERY PLAN SELECT doc FROM calls WHERE tenant = 't' AND provider = 'p'
                     AND provider_call_id = 'x' ORDER BY created_at DESC, call_id DESC LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_map([], |r| r.get::<_, String>(3))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(db)
            })
            .unwrap_or_default();
        assert!(
            plan.iter().any(|p| p.contains("calls_by_provider")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }
}
