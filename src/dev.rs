//! `vaani dev`: the webhook Lambda's handler served over local HTTP on the embedded store.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::sync::atomic::{AtomicU32, Ordering};
use vaani_events::Provider;
use vaani_media::server::{EchoApp, StreamServer};
use vaani_media::sip::sdp::Codec;
use vaani_media::sipnode::admission::AdmissionPolicy;
use vaani_media::sipnode::registry::CallRegistry;
use vaani_media::sipnode::{SipNode, SipNodeConfig};
use vaani_store::{MediaNode, ProviderCredentials, Stores, Tenant};
use vaani_telephony::WebhookRequest;
use vaani_webhooks::Deps;

use crate::cli::{AppKind, DevArgs};

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

    // The media node: provider media streams on the same port, answered by the chosen app.
    let active = Arc::new(AtomicU32::new(0));
    let token_key = deps.media_token_key.clone();
    let streams = Arc::new(StreamServer {
        token_key: deps.media_token_key.clone(),
        require_token: true,
        app: match args.app {
            AppKind::Echo => Arc::new(EchoApp),
        },
        max_calls: args.max_calls,
        active: active.clone(),
    });
    let state = Arc::new(AppState {
        deps,
        base_url: base_url.clone(),
    });
    // The media node's SIP side: calls over SIP/RTP, answered by the same app choice.
    let sip_registry = CallRegistry::default();
    let sip = start_sip(&args, token_key, active.clone(), sip_registry.clone()).await?;
    let app = vaani_media::server::router(streams)
        .merge(vaani_media::sipnode::registry::router(sip_registry))
        .merge(axum::Router::new().fallback(serve).with_state(state));
    let heartbeat = tokio::spawn(heartbeat(
        stores.clone(),
        ws_base.clone(),
        sip.sip_uri(),
        args.max_calls,
        active,
    ));

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
    println!(
        "  SIP (UDP):        {} (RTP ports {}, media address {}, allow {})",
        sip.sip_uri(),
        args.rtp_ports,
        sip.advertised_addr().ip(),
        args.sip_allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("  SIP calls:        {base_url}/debug/sip/calls");
    println!("  health:           {base_url}/healthz");
    println!(
        "  demo secrets:     vaani tenant show {DEMO_TENANT} --reveal --data {}",
        dir.display()
    );
    println!("ready http={local} sip={} url={base_url}", sip.local_addr());

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")?;
    heartbeat.abort();
    // Hang up SIP calls with a BYE before leaving.
    sip.shutdown(std::time::Duration::from_secs(2)).await;
    // Leave the registry so no answer webhook routes a call here any more.
    if let Err(e) = stores.nodes.remove_node(DEV_NODE).await {
        tracing::warn!(error = %e, "could not remove the node from the registry");
    }
    eprintln!("vaani dev: stopped");
    Ok(())
}

/// Starts the SIP side of the dev media node. The tenant of SIP calls without an
/// `X-Vaani-Tenant` header is the demo tenant: the one tenant `vaani dev` serves out of the
/// box, and the one its answer webhooks issue tokens for.
async fn start_sip(
    args: &DevArgs,
    token_key: Arc<Vec<u8>>,
    active: Arc<AtomicU32>,
    registry: CallRegistry,
) -> anyhow::Result<SipNode> {
    let media_address = args.media_address.unwrap_or(args.sip.ip());
    if media_address.is_unspecified() {
        anyhow::bail!(
            "--sip {} listens on every address: say which one to advertise with --media-address",
            args.sip
        );
    }
    let config = SipNodeConfig {
        bind: args.sip,
        media_address,
        rtp_ports: args.rtp_ports,
        allow: args.sip_allow.clone(),
        admission: AdmissionPolicy {
            token_key,
            default_tenant: Some(DEMO_TENANT.to_string()),
            require_token: args.sip_require_token,
        },
        max_calls: args.max_calls,
        active,
        rtp_timeout: std::time::Duration::from_secs(args.rtp_timeout.max(1)),
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        app: match args.app {
            AppKind::Echo => Arc::new(vaani_media::sipnode::app::EchoApp),
        },
        registry,
    };
    SipNode::start(config).await.with_context(|| {
        format!(
            "starting SIP on {} (another SIP server there? pass --sip 127.0.0.1:0 for any free port)",
            args.sip
        )
    })
}

/// Registry id of the `vaani dev` media node.
pub const DEV_NODE: &str = "dev";
/// How often the node refreshes its registry entry, and how long an entry lives without one.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const HEARTBEAT_TTL_SECS: i64 = 30;

/// Keep this node's registry entry fresh so answer webhooks route calls to it.
async fn heartbeat(
    stores: Stores,
    ws_base: String,
    sip_uri: String,
    capacity: u32,
    active: Arc<AtomicU32>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        let node = MediaNode {
            id: DEV_NODE.to_string(),
            sip_uri: sip_uri.clone(),
            ws_url: ws_base.clone(),
            capacity,
            active_calls: active.load(Ordering::Acquire),
            draining: false,
            last_heartbeat: now,
            expires_at: now + chrono::Duration::seconds(HEARTBEAT_TTL_SECS),
        };
        if let Err(e) = stores.nodes.heartbeat(&node).await {
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
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
