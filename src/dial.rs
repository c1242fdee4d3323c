//! `vaani dial`: asks a running `vaani dev` media node to place a call (`POST /node/calls`),
//! with a media token minted from the local data directory's key for the tenant and a call id
//! made here; with `--wait`, follows the call in `/debug/sip/calls` until it ends.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::DialArgs;

/// How long the token is valid: the request is made at once.
const TOKEN_TTL_SECS: i64 = 60;
/// How often `--wait` looks at the node's call registry.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(a: DialArgs) -> anyhow::Result<ExitCode> {
    if !vaani_core::tenant::valid_id(&a.tenant) {
        anyhow::bail!("--tenant must be 1-64 characters of A-Z a-z 0-9 - _");
    }
    let key = crate::local::existing_media_token_key(&a.data.dir())?;
    let call_id = format!("dial-{}", hex::encode(crate::local::random_bytes(8)?));
    let token = vaani_core::token::issue(
        &key,
        &a.tenant,
        &call_id,
        chrono::Utc::now(),
        TOKEN_TTL_SECS,
    );
    let mut body = serde_json::json!({
        "to": a.to,
        "from": a.from,
        "tenant": a.tenant,
        "call_id": call_id,
        "answer_timeout": a.answer_timeout,
    });
    if let Some(user) = &a.auth_user {
        let password = std::env::var("VAANI_SIP_PASSWORD")
            .context("--auth-user needs the password in $VAANI_SIP_PASSWORD")?;
        body["auth"] = serde_json::json!({ "username": user, "password": password });
    }
    let base = a.dev.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = http
        .post(format!("{base}/node/calls"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("reaching vaani dev at {base}"))?;
    let status = resp.status();
    let reply: serde_json::Value = resp.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        let why = reply["error"].as_str().unwrap_or("no reason given");
        eprintln!("error: the node refused the call ({status}): {why}");
        return Ok(ExitCode::from(1));
    }
    let sip_call_id = reply["sip_call_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "call_id={} sip_call_id={sip_call_id}",
        reply["call_id"].as_str().unwrap_or(&call_id)
    );
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait(&http, base, &sip_call_id).await
}

/// Follows the call in the node's registry, printing its state changes, until it ends.
async fn wait(http: &reqwest::Client, base: &str, sip_call_id: &str) -> anyhow::Result<ExitCode> {
    let mut last_state = String::new();
    loop {
        let calls: serde_json::Value = http
            .get(format!("{base}/debug/sip/calls"))
            .send()
            .await
            .with_context(|| format!("reaching vaani dev at {base}"))?
            .json()
            .await
            .context("reading /debug/sip/calls")?;
        let record = ["live", "ended"]
            .iter()
            .flat_map(|k| calls[k].as_array().cloned().unwrap_or_default())
            .find(|r| r["sip_call_id"] == sip_call_id);
        let Some(r) = record else {
            anyhow::bail!("the node has no record of call {sip_call_id}");
        };
        let state = r["state"].as_str().unwrap_or_default().to_string();
        if state == "ended" {
            let reason = r["end_reason"].as_str().unwrap_or("unknown");
            let connected = !r["answered_at"].is_null();
            println!(
                "ended: {reason} (connected: {}, rtp received {}, sent {})",
                if connected { "yes" } else { "no" },
                r["rtp_received"],
                r["rtp_sent"]
            );
            return Ok(if connected {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if state != last_state {
            println!("{state}");
            last_state = state;
        }
        tokio::time::sleep(POLL).await;
    }
}
