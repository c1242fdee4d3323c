//! The provider-signature layer of media-stream authentication for `vaani dev`'s node: the
//! tenant's credentials come from the store, and the URL the provider signed is the public
//! URL (`--public-url`, else the local address) with its scheme turned into `ws(s)://`.

use std::sync::Arc;

use futures::future::BoxFuture;
use ipnet::IpNet;
use vaani_events::Provider;
use vaani_media::server::{UpgradeAuth, UpgradeRefusal, UpgradeRequest};
use vaani_store::Stores;

pub struct TenantUpgradeAuth {
    pub stores: Stores,
    /// `ws://…` or `wss://…`, no trailing slash: what the provider connects to.
    pub ws_origin: String,
}

impl TenantUpgradeAuth {
    pub fn new(stores: Stores, public_base_url: &str) -> Arc<Self> {
        let ws_origin = public_base_url
            .trim_end_matches('/')
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        Arc::new(TenantUpgradeAuth { stores, ws_origin })
    }

    async fn check_inner(&self, req: UpgradeRequest<'_>) -> Result<(), UpgradeRefusal> {
        // Only Twilio signs the upgrade, and only Exotel's streams come from known networks;
        // Plivo and Telnyx streams rest on the media token alone.
        if !matches!(req.provider, Provider::Twilio | Provider::Exotel) {
            return Ok(());
        }
        let tenant = self
            .stores
            .tenants
            .get_tenant(req.tenant)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "tenant lookup for a stream upgrade failed");
                UpgradeRefusal::Unavailable("tenant store unavailable".into())
            })?
            .ok_or_else(|| UpgradeRefusal::Forbidden("unknown tenant".into()))?;
        let creds = tenant.credentials.get(&req.provider).ok_or_else(|| {
            UpgradeRefusal::Forbidden("this tenant has no credentials for this provider".into())
        })?;
        match req.provider {
            Provider::Twilio => {
                let url = format!("{}{}", self.ws_origin, req.path_and_query);
                vaani_media::streams::verify_twilio_upgrade(
                    &url,
                    req.headers,
                    &creds.secret,
                    chrono::Utc::now(),
                )
                .map_err(|e| UpgradeRefusal::Unauthorized(e.to_string()))
            }
            _ => {
                // Exotel: the tenant's source allowlist, when it has one.
                if creds.allow_cidrs.is_empty() {
                    return Ok(());
                }
                let ip = req
                    .source_ip
                    .ok_or_else(|| UpgradeRefusal::Forbidden("unknown source".into()))?;
                let allowed = creds
                    .allow_cidrs
                    .iter()
                    .filter_map(|c| c.parse::<IpNet>().ok())
                    .any(|n| n.contains(&ip));
                if allowed {
                    Ok(())
                } else {
                    Err(UpgradeRefusal::Forbidden(
                        "source not in the tenant's Exotel allowlist".into(),
                    ))
                }
            }
        }
    }
}

impl UpgradeAuth for TenantUpgradeAuth {
    fn check<'a>(&'a self, req: UpgradeRequest<'a>) -> BoxFuture<'a, Result<(), UpgradeRefusal>> {
        Box::pin(self.check_inner(req))
    }
}
