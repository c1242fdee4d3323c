//! `vaani dev`: the webhook Lambda's handler served over local HTTP on the embedded store.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use vaani_events::Provider;
use vaani_store::{ProviderCredentials, Stores, Tenant};
use vaani_telephony::WebhookRequest;
use vaani_webhooks::Deps;

use crate::cli::DevArgs;

pub const DEFAULT_FALLBACK: &str =
    "Sorry, all our agents are busy right now. Please call again in a few minutes.";
/// The tenant `vaani dev` creates on first start.
pub const DEMO_TENANT: &str = "demo";

pub fn valid_tenant_id(id: &str) -> Result<(), ()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

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
    let deps = Deps::new(stores, key);

    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding {}", args.http))?;
    let local = listener.local_addr()?;
    let base_url = args
        .public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{local}"));
    let state = Arc::new(AppState {
        deps,
        base_url: base_url.clone(),
    });
    let app = axum::Router::new().fallback(serve).with_state(state);

    println!(
        "vaani dev: control plane on embedded defaults (data in {})",
        dir.display()
    );
    println!("  status webhooks:  {base_url}/v1/{DEMO_TENANT}/{{twilio|exotel|plivo|telnyx|signalwire}}/status");
    println!("  answer webhooks:  {base_url}/v1/{DEMO_TENANT}/{{provider}}/answer");
    println!("  any provider:     {base_url}/v1/{DEMO_TENANT}/status");
    println!("  health:           {base_url}/healthz");
    println!(
        "  demo secrets:     vaani tenant show {DEMO_TENANT} --reveal --data {}",
        dir.display()
    );
    println!("ready http={local} url={base_url}");

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")?;
    eprintln!("vaani dev: stopped");
    Ok(())
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
