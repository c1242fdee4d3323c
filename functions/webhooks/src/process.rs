//! Accepting a webhook: tenant lookup, verification, parsing, idempotent storage, the state
//! transition and the call-events queue; then, for answer webhooks, the answer document.
//!
//! Idempotency (providers retry, and a Lambda may crash between any two lines):
//! 1. the event is stored under its dedupe id with a create-if-absent write;
//! 2. the call's state is advanced with compare-and-swap; `apply` is idempotent, so redoing
//!    it after a crash changes nothing the second time;
//! 3. the event goes on the queue with the dedupe id as the FIFO deduplication id, then is
//!    flagged `enqueued` (outbox): a retry re-sends only events not yet flagged, and a resend
//!    after a crash between send and flag is dropped by queue deduplication.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use vaani_core::nodes::{self, NodeLoad};
use vaani_core::{AnswerAction, AnswerPlan, CallState, Transition};
use vaani_events::{CallEvent, CallEventEnvelope, CallStatus, Provider};
use vaani_store::{queues, CallRecord, MediaNode, PutOutcome, StoreError, StoredEvent, Tenant};
use vaani_telephony::common::{ExotelAuth, Fields};
use vaani_telephony::{VerifyConfig, WebhookRequest};

use crate::{Deps, Response};

/// Result of accepting one webhook.
#[derive(Debug, Clone)]
pub struct Processed {
    pub call_id: String,
    pub event_id: String,
    /// The same webhook was accepted before (a provider retry).
    pub duplicate: bool,
    pub status: CallStatus,
    pub transition: Transition,
    pub event: CallEvent,
}

fn store_failure(e: StoreError) -> Response {
    tracing::error!(error = %e, "store failure");
    // 503 makes providers retry; the processing is idempotent.
    Response::error(503, "store_unavailable", "temporary storage failure, retry")
}

/// Best-effort masked caller/callee for logs about rejected requests.
fn masked_parties(req: &WebhookRequest) -> (String, String) {
    let f = Fields::from_body(req.content_type(), &req.body).unwrap_or_default();
    let m = |names: &[&str], ptr: &str| {
        f.get(names)
            .or_else(|| f.json_pointer(ptr).and_then(|v| v.as_str()))
            .map(vaani_core::phone::mask)
            .unwrap_or_default()
    };
    // Top-level form/JSON fields, or Telnyx's nested `data.payload`.
    (
        m(&["From", "CallFrom"], "/data/payload/from"),
        m(&["To", "CallTo"], "/data/payload/to"),
    )
}

fn verify_config(
    tenant: &Tenant,
    provider: Provider,
    deps: &Deps,
) -> Result<VerifyConfig, Response> {
    let Some(creds) = tenant.credentials.get(&provider) else {
        return Err(Response::error(
            404,
            "provider_not_configured",
            "this tenant has no credentials for this provider",
        ));
    };
    let mut allow = Vec::with_capacity(creds.allow_cidrs.len());
    for c in &creds.allow_cidrs {
        match c.parse() {
            Ok(net) => allow.push(net),
            Err(_) => {
                tracing::error!(tenant = %tenant.id, %provider, "tenant has an invalid CIDR in its allowlist");
                return Err(Response::error(
                    500,
                    "bad_tenant_config",
                    "tenant allowlist is invalid",
                ));
            }
        }
    }
    let mut cfg = VerifyConfig::new(creds.secret.clone(), deps.now());
    cfg.main_account_secret = creds.main_account_secret.clone();
    cfg.exotel = ExotelAuth {
        basic_user: creds.api_key.clone(),
        allow_cidrs: allow,
    };
    cfg.replay_window = deps.replay_window;
    Ok(cfg)
}

/// Verify, parse and record a webhook. `Err` is the response to send.
pub async fn accept(
    req: &WebhookRequest,
    tenant_id: &str,
    provider: Provider,
    deps: &Deps,
) -> Result<Processed, Response> {
    let tenant = deps
        .stores
        .tenants
        .get_tenant(tenant_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| Response::error(404, "unknown_tenant", "no such tenant"))?;
    let cfg = verify_config(&tenant, provider, deps)?;
    if let Err(e) = vaani_telephony::verify(provider, req, &cfg) {
        let (from, to) = masked_parties(req);
        tracing::warn!(
            tenant = tenant_id,
            %provider,
            code = e.code(),
            reason = %e,
            from,
            to,
            source_ip = req.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "webhook rejected"
        );
        return Err(Response::error(e.http_status(), e.code(), &e.to_string()));
    }
    let event = vaani_telephony::parse(provider, req.content_type(), &req.body, req.query())
        .map_err(|e| {
            tracing::warn!(tenant = tenant_id, %provider, reason = %e, "webhook not parseable");
            Response::error(400, "bad_payload", &e.to_string())
        })?;
    process_event(tenant_id, event, deps)
        .await
        .map_err(store_failure)
}

/// Our call id for a call first seen through a provider webhook: derived, so concurrent
/// first webhooks for the same provider call agree on it without coordination.
pub fn derived_call_id(tenant: &str, provider: Provider, provider_call_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(provider.as_str().as_bytes());
    h.update([0]);
    h.update(provider_call_id.as_bytes());
    format!("call_{}", hex::encode(&h.finalize()[..12]))
}

fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Find the call an event belongs to, or create it with the event already applied (one
/// write instead of two for a call's first webhook). Returns the transition when it created.
async fn resolve_call(
    tenant: &str,
    event: &CallEvent,
    now: DateTime<Utc>,
    deps: &Deps,
) -> Result<(CallRecord, Option<Transition>), StoreError> {
    let calls = &deps.stores.calls;
    let claimed = event.call_id.as_deref().filter(|id| valid_call_id(id));
    if let Some(id) = claimed {
        if let Some(rec) = calls.get_call(tenant, id).await? {
            return Ok((rec, None));
        }
    } else if let Some(rec) = calls
        .find_call_by_provider_id(tenant, event.provider, &event.provider_call_id)
        .await?
    {
        return Ok((rec, None));
    }
    let call_id = claimed.map_or_else(
        || derived_call_id(tenant, event.provider, &event.provider_call_id),
        str::to_string,
    );
    let (state, transition) = vaani_core::apply(&CallState::default(), event);
    let rec = CallRecord {
        tenant: tenant.to_string(),
        call_id,
        provider: event.provider,
        provider_call_id: event.provider_call_id.clone(),
        state,
        created_at: now,
        updated_at: now,
        version: 1,
        node_id: None,
    };
    Ok(match calls.create_call(&rec).await? {
        PutOutcome::Inserted => (rec, Some(transition)),
        // A concurrent first webhook created it: apply ours to theirs below.
        PutOutcome::Exists(existing) => (existing, None),
    })
}

const CAS_ATTEMPTS: usize = 16;

/// Store a parsed, verified event and advance its call. Idempotent (see module docs).
pub async fn process_event(
    tenant: &str,
    event: CallEvent,
    deps: &Deps,
) -> Result<Processed, StoreError> {
    let now = deps.now();
    let (mut rec, created) = resolve_call(tenant, &event, now, deps).await?;
    let event_id = event.dedupe_id();
    let stored = StoredEvent {
        tenant: tenant.to_string(),
        call_id: rec.call_id.clone(),
        event_id: event_id.clone(),
        received_at: now,
        event: event.clone(),
        enqueued: false,
        expires_at: Some(now + deps.event_ttl),
    };
    let (duplicate, enqueued) = match deps.stores.events.put_event(&stored).await? {
        PutOutcome::Inserted => (false, false),
        PutOutcome::Exists(prev) => (true, prev.enqueued),
    };

    let transition = match created {
        Some(t) => t,
        None => {
            let (advanced, t) = advance(tenant, rec, &event, now, deps).await?;
            rec = advanced;
            t
        }
    };
    if let Transition::Status { from, to } = transition {
        tracing::info!(tenant, call_id = %rec.call_id, provider = %event.provider, %from, %to, "call status");
    }

    if !enqueued {
        let envelope = CallEventEnvelope {
            v: CallEventEnvelope::VERSION,
            tenant: tenant.to_string(),
            call_id: rec.call_id.clone(),
            event_id: event_id.clone(),
            received_at: now,
            event: event.clone(),
        };
        let body =
            serde_json::to_string(&envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        deps.stores
            .queue
            .send(queues::CALL_EVENTS, &body, Some(&event_id))
            .await?;
        deps.stores
            .events
            .mark_event_enqueued(tenant, &rec.call_id, &event_id)
            .await?;
    }

    Ok(Processed {
        call_id: rec.call_id,
        event_id,
        duplicate,
        status: rec.state.status,
        transition,
        event,
    })
}

/// Apply `event` to the stored call with compare-and-swap, re-reading on conflict.
async fn advance(
    tenant: &str,
    mut rec: CallRecord,
    event: &CallEvent,
    now: DateTime<Utc>,
    deps: &Deps,
) -> Result<(CallRecord, Transition), StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (state, t) = vaani_core::apply(&rec.state, event);
        if t == Transition::Unchanged {
            return Ok((rec, t));
        }
        let mut next = rec.clone();
        next.state = state;
        next.version += 1;
        next.updated_at = now;
        if deps.stores.calls.update_call(&next).await? {
            return Ok((next, t));
        }
        rec = deps
            .stores
            .calls
            .get_call(tenant, &rec.call_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("call vanished during update".into()))?;
    }
    Err(StoreError::Backend("call update kept conflicting".into()))
}

struct Load<'a>(&'a MediaNode);

impl NodeLoad for Load<'_> {
    fn id(&self) -> &str {
        &self.0.id
    }
    fn capacity(&self) -> u32 {
        self.0.capacity
    }
    fn active_calls(&self) -> u32 {
        self.0.active_calls
    }
    fn draining(&self) -> bool {
        self.0.draining
    }
    fn last_heartbeat(&self) -> DateTime<Utc> {
        self.0.last_heartbeat
    }
}

/// Build the answer plan for an accepted answer webhook: the best media node, or the
/// tenant's fallback message.
pub async fn plan_answer(
    tenant: &Tenant,
    provider: Provider,
    call_id: &str,
    deps: &Deps,
) -> Result<(AnswerPlan, Option<String>), StoreError> {
    let now = deps.now();
    let registry = deps.stores.nodes.list_nodes().await?;
    let loads: Vec<Load<'_>> = registry.iter().map(Load).collect();
    let token = vaani_core::token::issue(
        &deps.media_token_key,
        &tenant.id,
        call_id,
        now,
        vaani_core::token::DEFAULT_TTL_SECS,
    );
    let chosen = nodes::pick(&loads, now, nodes::DEFAULT_MAX_HEARTBEAT_AGE).map(|l| l.0);
    let (action, node_id) = match chosen {
        // Media streams where the node offers them (no per-minute SIP-interface charge at
        // Twilio/Plivo), SIP otherwise. Exotel can only stream.
        Some(n) if !n.ws_url.is_empty() => (
            // The tenant is in the path: the node checks the media token for (tenant, call).
            AnswerAction::ConnectStream {
                url: format!(
                    "{}/{}/{}",
                    n.ws_url.trim_end_matches('/'),
                    tenant.id,
                    provider
                ),
            },
            Some(n.id.clone()),
        ),
        Some(n) if !n.sip_uri.is_empty() && provider != Provider::Exotel => (
            AnswerAction::ConnectSip {
                uri: n.sip_uri.clone(),
            },
            Some(n.id.clone()),
        ),
        _ => (
            AnswerAction::PlayAndHangup {
                message: tenant.fallback_message.clone(),
                language: None,
            },
            None,
        ),
    };
    Ok((
        AnswerPlan {
            tenant: tenant.id.clone(),
            call_id: call_id.to_string(),
            token,
            action,
        },
        node_id,
    ))
}

/// Answer document for an accepted answer webhook.
pub async fn answer(tenant_id: &str, provider: Provider, p: &Processed, deps: &Deps) -> Response {
    let tenant = match deps.stores.tenants.get_tenant(tenant_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Response::error(404, "unknown_tenant", "no such tenant"),
        Err(e) => return store_failure(e),
    };
    if p.status.is_terminal() {
        return Response::error(409, "call_ended", "the call has already ended");
    }
    let (plan, node_id) = match plan_answer(&tenant, provider, &p.call_id, deps).await {
        Ok(x) => x,
        Err(e) => return store_failure(e),
    };
    if let Some(node) = &node_id {
        if let Err(e) = record_node(tenant_id, &p.call_id, node, deps).await {
            return store_failure(e);
        }
        tracing::info!(tenant = tenant_id, call_id = %p.call_id, node = %node, "call routed to media node");
    } else {
        tracing::warn!(tenant = tenant_id, call_id = %p.call_id, "no media node available; fallback");
    }
    match vaani_telephony::render_answer(provider, &plan) {
        Ok(doc) => Response {
            status: 200,
            content_type: doc.content_type,
            body: bytes::Bytes::from(doc.body),
        },
        Err(e) => {
            tracing::error!(tenant = tenant_id, %provider, error = %e, "cannot render answer");
            Response::error(503, "cannot_answer", &e.to_string())
        }
    }
}

async fn record_node(
    tenant: &str,
    call_id: &str,
    node: &str,
    deps: &Deps,
) -> Result<(), StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(mut rec) = deps.stores.calls.get_call(tenant, call_id).await? else {
            return Err(StoreError::Corrupt("call vanished".into()));
        };
        if rec.node_id.as_deref() == Some(node) {
            return Ok(());
        }
        rec.node_id = Some(node.to_string());
        rec.version += 1;
        rec.updated_at = deps.now();
        if deps.stores.calls.update_call(&rec).await? {
            return Ok(());
        }
    }
    Err(StoreError::Backend("call update kept conflicting".into()))
}
