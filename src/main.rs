//! `vaani`: the command line a user runs first. Thin over the crates in `infra/` and
//! `functions/`: `dev` serves the webhook Lambda's handler locally on the embedded store;
//! `webhook` verifies, signs and parses provider webhooks offline; `calls` and `tenant` read
//! and write the local store; `dial` places a call from a running `vaani dev` node.

mod agent;
mod call;
mod cli;
mod dev;
mod dial;
mod local;
mod stream_auth;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The WebRTC stack logs every state change at info and two harmless warnings per call
    // (DTLS without a server name, ICE pinging before the answer's candidates): by default only
    // its warnings, and its ICE and DTLS errors. RUST_LOG replaces all of this.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        "info,webrtc=warn,rtc=warn,rtc_ice=error,rtc_dtls=error,rtc_sctp=warn,rtc_srtp=warn,rtc_interceptor=warn".to_string()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{filter},{}",
            vaani_media::cloud::LOG_DIRECTIVES
        )))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
