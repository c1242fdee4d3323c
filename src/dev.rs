//! `vaani dev`: the webhook Lambda's handler served over local HTTP on the embedded store.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::sync::atomic::{AtomicU32, Ordering};
use vaani_events::{MediaCallEnded, MediaCallUsage, Provider};
use vaani_media::metrics::{CallEnd, Metrics};
use vaani_media::server::{EchoApp, StreamServer};
use vaani_media::sip::sdp::Codec;
use vaani_media::sipnode::admission::AdmissionPolicy;
use vaani_media::sipnode::registry::CallRegistry;
use vaani_media::sipnode::{trunks, SipNode, SipNodeConfig};
use vaani_media::webrtc::{CallTimers, WebRtcConfig, WebRtcNode};
use vaani_store::{MediaNode, ProviderCredentials, Stores, Tenant};
use vaani_telephony::WebhookRequest;
use vaani_webhooks::Deps;

use crate::cli::{AppKind, DevArgs, RtpEngine};

pub const DEFAULT_FALLBACK: &str =
    "Sorry, all our agents are busy right now. Please call again in a few minutes.";
/// The tenant `vaani dev` creates on first start.
pub const DEMO_TENANT: &str = "demo";

struct AppState {
    deps: Deps,
    base_url: String,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = args.data.dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stores = crate::local::open_store(&dir)?;
    let key = crate::local::media_token_key(&dir)?;
    seed_demo_tenant(&stores).await?;
    let deps = Deps::new(stores.clone(), key);

    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding {}", args.http))?;
    let local = listener.local_addr()?;
    let base_url = args
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{local}"));
    let ws_base = format!(
        "{}/streams",
        base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );

    // The app that answers calls: the agent (realtime pipeline) or echo.
    let (agent, reports) = match args.app {
        AppKind::Agent => {
            let (app, reports) =
                crate::agent::build_set(args.agent.as_deref(), args.agents.as_deref()).await?;
            (Some(app), Some(reports))
        }
        AppKind::Echo => (None, None),
    };
    let sip_app: Arc<dyn vaani_media::sipnode::app::SipApp> = match &agent {
        Some(a) => a.clone(),
        None => Arc::new(vaani_media::sipnode::app::EchoApp),
    };

    // The media node: provider media streams on the same port, answered by the chosen app.
    let active = Arc::new(AtomicU32::new(0));
    let (metrics, ended) = Metrics::with_sink();
    if let Some(reports) = reports {
        tokio::spawn(store_reports(stores.clone(), metrics.clone(), reports));
    }
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let token_key = deps.media_token_key.clone();
    let webrtc_closing = closing.clone();
    let streams = Arc::new(StreamServer {
        token_key: deps.media_token_key.clone(),
        require_token: true,
        upgrade_auth: Some(crate::stream_auth::TenantUpgradeAuth::new(
            stores.clone(),
            &base_url,
        )),
        app: match &agent {
            Some(a) => a.clone(),
            None => Arc::new(EchoApp),
        },
        max_calls: args.max_calls,
        active: active.clone(),
        metrics: metrics.clone(),
        closing,
    });
    let state = Arc::new(AppState {
        deps,
        base_url: base_url.clone(),
    });
    // The media node's SIP side: calls over SIP/RTP, answered by the same app choice.
    let sip_registry = CallRegistry::default();
    let sip = start_sip(
        &args,
        sip_app.clone(),
        token_key.clone(),
        active.clone(),
        sip_registry.clone(),
        metrics.clone(),
    )
    .await?;
    // Browser calls (WebRTC) on the SIP node's media address and RTP range, answered by the
    // same app as SIP calls.
    let webrtc = WebRtcNode::new(WebRtcConfig {
        media_address: sip.advertised_addr().ip(),
        ports: args.rtp_ports,
        token_key: state.deps.media_token_key.clone(),
        app: sip_app,
        max_calls: args.max_calls,
        active: active.clone(),
        metrics: metrics.clone(),
        registry: Default::default(),
        closing: webrtc_closing,
        timers: CallTimers {
            rtp: Duration::from_secs(args.rtp_timeout.max(1)),
            ..CallTimers::default()
        },
    });
    let page = Arc::new(CallPage {
        token_key: state.deps.media_token_key.clone(),
    });
    let app = vaani_media::server::router(streams)
        .merge(vaani_media::sipnode::registry::router(sip_registry))
        .merge(vaani_media::sipnode::outbound::router(
            sip.dialer(),
            token_key,
        ))
        .merge(vaani_media::webrtc::router(webrtc))
        .merge(
            axum::Router::new()
                .route("/", axum::routing::get(call_page))
                .with_state(page),
        )
        .merge(vaani_media::metrics::router(metrics.clone()))
        .merge(axum::Router::new().fallback(serve).with_state(state));
    let entry = NodeEntry {
        stores: stores.clone(),
        ws_url: ws_base.clone(),
        sip_uri: sip.sip_uri(),
        capacity: args.max_calls,
        active: active.clone(),
        metrics: metrics.clone(),
    };
    let heartbeat = tokio::spawn(heartbeat(entry.clone()));
    let call_events = tokio::spawn(queue_call_ends(stores.clone(), ended));

    println!(
        "vaani dev: control plane and media node on embedded defaults (data in {})",
        dir.display()
    );
    println!("  status webhooks:  {base_url}/v1/{DEMO_TENANT}/{{twilio|exotel|plivo|telnyx|signalwire}}/status");
    println!("  answer webhooks:  {base_url}/v1/{DEMO_TENANT}/{{provider}}/answer");
    println!("  any provider:     {base_url}/v1/{DEMO_TENANT}/status");
    println!(
        "  media streams:    {ws_base}/{{tenant}}/{{twilio|exotel|plivo|telnyx}} (app: {:?})",
        args.app
    );
    let who = match &args.sip_trunks {
        Some(path) => format!("trunks from {}", path.display()),
        None => format!(
            "allow {}{}",
            args.sip_allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            if args.sip_auth.is_some() {
                ", others with Digest"
            } else {
                ""
            }
        ),
    };
    println!(
        "  SIP (UDP, TCP):   {} (RTP ports {}, media address {}, {who})",
        sip.sip_uri(),
        args.rtp_ports,
        sip.advertised_addr().ip(),
    );
    println!("  SIP calls:        {base_url}/debug/sip/calls");
    println!("  place a call:     POST {base_url}/node/calls (vaani dial sip:user@IP:PORT)");
    println!("  browser calls:    {base_url}/ (WebRTC, signalling at {base_url}/webrtc/{{tenant}}; calls at {base_url}/debug/webrtc/calls)");
    println!("  health:           {base_url}/healthz (control plane), {base_url}/node/healthz (media node: 503 while draining)");
    println!("  metrics:          {base_url}/metrics");
    println!(
        "  demo secrets:     vaani tenant show {DEMO_TENANT} --reveal --data {}",
        dir.display()
    );
    // Where this node listens, for `vaani call dev` and `vaani dial`.
    let dev_info = serde_json::json!({
        "http": local.to_string(),
        "sip": sip.local_addr().to_string(),
        "url": base_url,
        "pid": std::process::id(),
    });
    if let Err(e) = std::fs::write(dir.join(DEV_INFO_FILE), dev_info.to_string()) {
        tracing::warn!(error = %e, "could not write {DEV_INFO_FILE}");
    }
    match sip.tls_addr() {
        Some(tls) => println!(
            "ready http={local} sip={} sip_tls={tls} url={base_url}",
            sip.local_addr()
        ),
        None => println!("ready http={local} sip={} url={base_url}", sip.local_addr()),
    }

    // HTTP keeps serving while the node drains (health, metrics, refusals, the calls' own
    // streams); it stops once the drain is over.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped_rx.await;
        })
        .into_future(),
    );
    tokio::select! {
        () = shutdown_signal() => {}
        r = server => {
            // The server stopped on its own: an I/O failure.
            r.context("HTTP task")?.context("serving HTTP")?;
            anyhow::bail!("HTTP server stopped");
        }
    }
    drain(&entry, Duration::from_secs(args.drain_timeout)).await;
    heartbeat.abort();
    // No more calls here: `vaani call dev` must not find a stopped node.
    let _ = std::fs::remove_file(dir.join(DEV_INFO_FILE));
    // The deadline passed (or nothing is left): close the remaining streams and hang up
    // SIP calls with a BYE.
    let _ = closing_tx.send(true);
    sip.shutdown(Duration::from_secs(2)).await;
    let streams_closed = Instant::now() + Duration::from_secs(2);
    while active.load(Ordering::Acquire) > 0 && Instant::now() < streams_closed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stopped_tx.send(());
    // Leave the registry so no answer webhook routes a call here any more.
    if let Err(e) = stores.nodes.remove_node(DEV_NODE).await {
        tracing::warn!(error = %e, "could not remove the node from the registry");
    }
    // Queue the last calls' ends.
    metrics.close_sink();
    let _ = tokio::time::timeout(Duration::from_secs(5), call_events).await;
    eprintln!("vaani dev: stopped");
    Ok(())
}

/// Drains the node: marks it draining (new calls refused, the registry entry says so at
/// once so answer webhooks stop routing here) and waits until no call is up, `timeout`
/// passes, or a second signal comes.
async fn drain(entry: &NodeEntry, timeout: Duration) {
    entry.metrics.start_draining();
    let up = entry.active.load(Ordering::Acquire);
    eprintln!(
        "vaani dev: draining: {up} call(s) up, waiting up to {}s (signal again to stop now)",
        timeout.as_secs()
    );
    tracing::info!(calls = up, timeout_s = timeout.as_secs(), "draining");
    entry.write().await;
    let deadline = tokio::time::Instant::now() + timeout;
    let idle = async {
        while entry.active.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = idle => tracing::info!("drained: no calls left"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(calls = entry.active.load(Ordering::Acquire), "drain deadline passed: hanging up");
        }
        () = shutdown_signal() => tracing::warn!("second signal: hanging up"),
    }
}

/// Puts every ended call that carries our call id on the call-events queue.
/// Keep each call's pipeline report (for `vaani calls show`) and queue its engine usage for
/// cost accounting.
pub async fn store_reports(
    stores: Stores,
    metrics: Arc<Metrics>,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<vaani_media::pipeline::call::CallReport>,
) {
    while let Some(report) = reports.recv().await {
        for t in &report.turns {
            if let Some(ms) = t.total_ms {
                metrics.turn_latency(Duration::from_millis(ms));
            }
        }
        let now = chrono::Utc::now();
        let tenant = report
            .ids
            .tenant
            .clone()
            .unwrap_or_else(|| DEMO_TENANT.to_string());
        let body = match serde_json::to_value(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "call report not serialized");
                continue;
            }
        };
        let stored = vaani_store::StoredReport {
            tenant: tenant.clone(),
            call_id: report.ids.call_id.clone(),
            transport_id: report.ids.transport_id.clone(),
            created_at: now,
            body,
            expires_at: Some(now + chrono::Duration::days(REPORT_TTL_DAYS)),
        };
        if let Err(e) = stores.reports.put_report(&stored).await {
            tracing::warn!(error = %e, "call report not stored");
        }
        let usage = MediaCallUsage {
            kind: MediaCallUsage::KIND.to_string(),
            v: MediaCallUsage::VERSION,
            tenant,
            call_id: report
                .ids
                .call_id
                .clone()
                .unwrap_or_else(|| report.ids.transport_id.clone()),
            node_id: DEV_NODE.to_string(),
            stt_engine: report.engines.stt.clone(),
            stt_audio_ms: report.usage.stt_audio_ms,
            llm_engine: report.engines.llm.clone(),
            llm_input_tokens: report.usage.llm.input_tokens,
            llm_output_tokens: report.usage.llm.output_tokens,
            llm_cache_read_tokens: report.usage.llm.cache_read_tokens,
            llm_cache_write_tokens: report.usage.llm.cache_write_tokens,
            tts_engine: report.engines.tts.clone(),
            tts_characters: report.usage.tts_characters,
            ended_at: now,
        };
        match serde_json::to_string(&usage) {
            Ok(body) => {
                let dedupe = usage.dedupe_id();
                if let Err(e) = stores
                    .queue
                    .send(vaani_store::queues::CALL_EVENTS, &body, Some(&dedupe))
                    .await
                {
                    tracing::warn!(error = %e, "usage event not queued");
                }
            }
            Err(e) => tracing::warn!(error = %e, "usage event not serialized"),
        }
    }
}

/// How long the dev node keeps call reports.
const REPORT_TTL_DAYS: i64 = 30;

async fn queue_call_ends(stores: Stores, mut ended: tokio::sync::mpsc::Receiver<CallEnd>) {
    while let Some(end) = ended.recv().await {
        let Some(call_id) = end.call_id.clone() else {
            continue;
        };
        let event = MediaCallEnded {
            kind: MediaCallEnded::KIND.to_string(),
            v: MediaCallEnded::VERSION,
            tenant: end
                .tenant
                .clone()
                .unwrap_or_else(|| DEMO_TENANT.to_string()),
            call_id,
            node_id: DEV_NODE.to_string(),
            transport: end.transport.as_str().to_string(),
            reason: end.reason.as_str().to_string(),
            ended_at: end.ended_at,
            duration_ms: u64::try_from(end.duration().as_millis()).unwrap_or(u64::MAX),
        };
        let body = match serde_json::to_string(&event) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "call-ended event not serialized");
                continue;
            }
        };
        let dedupe = event.dedupe_id();
        if let Err(e) = stores
            .queue
            .send(vaani_store::queues::CALL_EVENTS, &body, Some(&dedupe))
            .await
        {
            tracing::warn!(error = %e, call_id = %event.call_id, "call-ended event not queued");
        }
    }
}

/// Starts the SIP side of the dev media node. The tenant of SIP calls without an
/// `X-Vaani-Tenant` header is the demo tenant: the one tenant `vaani dev` serves out of the
/// box, and the one its answer webhooks issue tokens for.
async fn start_sip(
    args: &DevArgs,
    app: Arc<dyn vaani_media::sipnode::app::SipApp>,
    token_key: Arc<Vec<u8>>,
    active: Arc<AtomicU32>,
    registry: CallRegistry,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SipNode> {
    let media_address = args.media_address.unwrap_or(args.sip.ip());
    if args.sip_codecs.is_empty() {
        anyhow::bail!("--sip-codecs names no codec");
    }
    if media_address.is_unspecified() {
        anyhow::bail!(
            "--sip {} listens on every address: say which one to advertise with --media-address",
            args.sip
        );
    }
    let trunks = sip_trunks(args)?;
    let tls = match (&args.sip_tls, &args.sip_tls_cert, &args.sip_tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            Some((*addr, vaani_media::sipnode::tcp::tls_acceptor(cert, key)?))
        }
        _ => None,
    };
    let config = SipNodeConfig {
        bind: args.sip,
        media_address,
        rtp_ports: args.rtp_ports,
        trunks,
        admission: AdmissionPolicy {
            token_key,
            default_tenant: Some(DEMO_TENANT.to_string()),
            require_token: args.sip_require_token,
        },
        max_calls: args.max_calls,
        active,
        rtp_timeout: std::time::Duration::from_secs(args.rtp_timeout.max(1)),
        codecs: sip_codecs(&args.sip_codecs),
        app,
        registry,
        metrics,
        outbound_proxy: args.sip_outbound_proxy,
        tls,
        media: {
            use vaani_media::sipnode::engine::EngineConfig;
            use vaani_media::sipnode::MediaMode;
            use vaani_media::udp::IoMode;
            let engine = |io| {
                MediaMode::Engine(EngineConfig {
                    workers: args.media_workers,
                    io,
                    ..EngineConfig::default()
                })
            };
            match args.rtp_engine {
                RtpEngine::Batched => engine(IoMode::Batched),
                RtpEngine::PerPacket => engine(IoMode::PerPacket),
                RtpEngine::PerCall => MediaMode::PerCallSocket,
            }
        },
    };
    SipNode::start(config).await.with_context(|| {
        format!(
            "starting SIP on {} (another SIP server there? pass --sip 127.0.0.1:0 for any free port)",
            args.sip
        )
    })
}

/// The browser-call page: static HTML and JS, given a fresh call id and media token for the
/// demo tenant each time it is served.
struct CallPage {
    token_key: Arc<Vec<u8>>,
}

const CALL_PAGE: &str = include_str!("call.html");

/// `GET /`: the page, with its call id and token.
async fn call_page(State(page): State<Arc<CallPage>>) -> axum::response::Response {
    let call_id = match crate::local::random_bytes(8) {
        Ok(b) => format!("web-{}", hex::encode(b)),
        Err(e) => {
            tracing::warn!(error = %e, "no randomness for a call id");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let token = vaani_core::token::issue(
        &page.token_key,
        DEMO_TENANT,
        &call_id,
        chrono::Utc::now(),
        vaani_core::token::DEFAULT_TTL_SECS,
    );
    let config = serde_json::json!({ "tenant": DEMO_TENANT, "call_id": call_id, "token": token });
    // Inside <script>: no "<" may close the element early (JSON allows the escape).
    let config = config.to_string().replace('<', "\\u003c");
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        CALL_PAGE.replace("{{VAANI_CONFIG}}", &config),
    )
        .into_response()
}

/// Registry id of the `vaani dev` media node.
pub const DEV_NODE: &str = "dev";
/// File in the data directory naming the running `vaani dev`'s addresses.
pub const DEV_INFO_FILE: &str = "dev.json";
/// How often the node refreshes its registry entry, and how long an entry lives without one.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const HEARTBEAT_TTL_SECS: i64 = 30;

/// What the node's registry entry is made of.
#[derive(Clone)]
struct NodeEntry {
    stores: Stores,
    ws_url: String,
    sip_uri: String,
    capacity: u32,
    active: Arc<AtomicU32>,
    metrics: Arc<Metrics>,
}

impl NodeEntry {
    /// Writes the entry as it is now (draining or not).
    async fn write(&self) {
        let now = chrono::Utc::now();
        let node = MediaNode {
            id: DEV_NODE.to_string(),
            sip_uri: self.sip_uri.clone(),
            ws_url: self.ws_url.clone(),
            capacity: self.capacity,
            active_calls: self.active.load(Ordering::Acquire),
            draining: self.metrics.is_draining(),
            last_heartbeat: now,
            expires_at: now + chrono::Duration::seconds(HEARTBEAT_TTL_SECS),
        };
        if let Err(e) = self.stores.nodes.heartbeat(&node).await {
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
    }
}

/// Keep this node's registry entry fresh so answer webhooks route calls to it (and, while
/// draining, keep saying it drains).
async fn heartbeat(entry: NodeEntry) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tick.tick().await;
        entry.write().await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn serve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let started = std::time::Instant::now();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = WebhookRequest {
        method: method.clone(),
        url: format!("{}{}", state.base_url, path_and_query),
        headers,
        body,
        source_ip: Some(peer.ip()),
    };
    let resp = vaani_webhooks::handle(req, &state.deps).await;
    tracing::info!(
        method = %method,
        path = uri.path(),
        status = resp.status,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, resp.content_type)],
        resp.body,
    )
}

/// Create the demo tenant on first start, with random per-provider secrets (or the ones in
/// `VAANI_DEMO_<PROVIDER>_SECRET`). Telnyx needs an Ed25519 public key: set it with
/// `vaani tenant set demo --provider telnyx --secret <base64 key>`.
async fn seed_demo_tenant(stores: &Stores) -> anyhow::Result<()> {
    if stores.tenants.get_tenant(DEMO_TENANT).await?.is_some() {
        return Ok(());
    }
    let mut tenant = Tenant {
        id: DEMO_TENANT.to_string(),
        name: "Demo".to_string(),
        fallback_message: DEFAULT_FALLBACK.to_string(),
        credentials: Default::default(),
    };
    for p in Provider::ALL {
        let var = format!("VAANI_DEMO_{}_SECRET", p.as_str().to_ascii_uppercase());
        let secret = match std::env::var(&var) {
            Ok(s) if !s.is_empty() => s,
            _ if p == Provider::Telnyx => continue,
            _ => hex::encode(crate::local::random_bytes(16)?),
        };
        tenant.credentials.insert(
            p,
            ProviderCredentials {
                account: String::new(),
                secret,
                main_account_secret: None,
                api_key: None,
                allow_cidrs: Vec::new(),
            },
        );
    }
    stores.tenants.put_tenant(&tenant).await?;
    Ok(())
}

/// The node's trunks: from `--sip-trunks FILE`, else one trunk `allowed` for the
/// `--sip-allow` networks and, with `--sip-auth`, one trunk `digest` taking those credentials
/// from anywhere. Digest nonces are signed with a fresh random key.
fn sip_trunks(args: &DevArgs) -> anyhow::Result<trunks::Trunks> {
    let key: [u8; 32] = crate::local::random_bytes(32)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("short read from /dev/urandom"))?;
    if let Some(path) = &args.sip_trunks {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --sip-trunks {}", path.display()))?;
        return trunks::Trunks::parse(&text, |var| std::env::var(var).ok(), key)
            .with_context(|| format!("--sip-trunks {}", path.display()));
    }
    let mut list = vec![trunks::Trunk {
        name: "allowed".into(),
        allow: args.sip_allow.clone(),
        auth: None,
        tenant: None,
        agent: None,
    }];
    if let Some(auth) = sip_auth(args.sip_auth.as_deref(), key)? {
        list.push(trunks::Trunk {
            name: "digest".into(),
            allow: Vec::new(),
            auth: Some(auth),
            tenant: None,
            agent: None,
        });
    }
    Ok(trunks::Trunks::new(list)?)
}

/// The Digest verifier for `--sip-auth USER:PASSWORD` (or `VAANI_SIP_AUTH`), its nonces
/// signed with `key`.
fn sip_auth(
    value: Option<&str>,
    key: [u8; 32],
) -> anyhow::Result<Option<vaani_media::sip::digest_server::DigestVerifier>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let Some((user, password)) = value.split_once(':') else {
        // The value holds a password: never echo it.
        anyhow::bail!("--sip-auth / VAANI_SIP_AUTH must be USER:PASSWORD");
    };
    if user.is_empty() || password.is_empty() || user.contains(['"', '\\']) {
        anyhow::bail!("--sip-auth / VAANI_SIP_AUTH must be USER:PASSWORD (both non-empty)");
    }
    Ok(Some(vaani_media::sip::digest_server::DigestVerifier::new(
        trunks::REALM,
        vaani_media::sip::digest::Credentials {
            username: user.to_string(),
            password: password.to_string(),
        },
        key,
    )))
}

/// `--sip-codecs` as SDP codecs, in the order given (repeats dropped).
pub(crate) fn sip_codecs(list: &[crate::cli::SipCodec]) -> Vec<Codec> {
    use crate::cli::SipCodec;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let codec = match c {
            SipCodec::Pcmu => Codec::Pcmu,
            SipCodec::Pcma => Codec::Pcma,
            SipCodec::G722 => Codec::G722,
            SipCodec::Opus => Codec::Opus,
        };
        if !out.contains(&codec) {
            out.push(codec);
        }
    }
    out
}
