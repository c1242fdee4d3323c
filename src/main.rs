//! `vaani`: the command line a user runs first. Thin over the crates in `infra/` and
//! `functions/`: `dev` serves the webhook Lambda's handler locally on the embedded store;
//! `webhook` verifies, signs and parses provider webhooks offline; `calls` and `tenant` read
//! and write the local store.

mod cli;
mod dev;
mod local;
mod stream_auth;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
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
