//! Command definitions and their handlers.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use vaani_events::Provider;
use vaani_store::{ProviderCredentials, Stores, Tenant};
use vaani_telephony::common::ExotelAuth;
use vaani_telephony::{VerifyConfig, WebhookRequest};

#[derive(Debug, Parser)]
#[command(
    name = "vaani",
    version,
    about = "Voice-AI telephony: answer and place phone calls with AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the control plane locally on embedded defaults (SQLite store and queue) and print the
    /// webhook URLs to point a provider (or curl) at.
    Dev(DevArgs),
    /// Verify, sign or parse provider webhooks offline.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Inspect calls in the local store.
    #[command(subcommand)]
    Calls(CallsCmd),
    /// Manage tenants and their provider credentials in the local store.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Place a call from a running `vaani dev` media node to a SIP URI (POST /node/calls); the
    /// echo app answers it once it connects.
    Dial(DialArgs),
    /// Call an agent and talk to it: each --say line is spoken (and each --dtmf key pressed)
    /// when the agent pauses; prints what both sides said with per-turn latencies.
    Call(CallArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DataArg {
    /// Local data directory (default: $VAANI_DATA, else ~/.local/share/vaani).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl DataArg {
    pub fn dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(crate::local::default_data_dir)
    }
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address for the HTTP server (webhooks, health).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: SocketAddr,
    /// Public base URL providers use to reach this server (e.g. an https tunnel); webhook
    /// signatures are checked against it. Default: http://<--http>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// What answers calls on this node: `agent` talks to the caller (the agent spec in
    /// --agent), `echo` plays back what it hears (media tests).
    #[arg(long, value_enum, default_value_t = AppKind::Agent)]
    pub app: AppKind,
    /// The agent spec (TOML) `--app agent` answers with; default: the sample agent
    /// (agents/sample.toml, built in).
    #[arg(long, value_name = "FILE")]
    pub agent: Option<std::path::PathBuf>,
    /// More agents, by id: `DIR/ID.toml` for every tenant, `DIR/TENANT/ID.toml` for one
    /// tenant's calls; a call names one with `X-Vaani-Agent` (or its trunk's `agent`).
    #[arg(long, value_name = "DIR")]
    pub agents: Option<std::path::PathBuf>,
    /// Concurrent calls this node takes (streams and SIP together); above it, media streams
    /// and SIP INVITEs are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 100)]
    pub max_calls: u32,
    /// SIP address (UDP) the media node answers calls on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:5060", value_name = "ADDR")]
    pub sip: SocketAddr,
    /// UDP port range for RTP: the media engine takes an even port (RTP) and the odd one after
    /// it (RTCP) per worker; `--rtp-engine per-call` takes one even port per call.
    #[arg(long, default_value = "20000-20999", value_name = "LOW-HIGH")]
    pub rtp_ports: vaani_media::sipnode::ports::PortRange,
    /// How RTP runs: `batched` (worker threads, one shared socket each, recvmmsg/sendmmsg),
    /// `per-packet` (the same workers, one system call per datagram), or `per-call` (a socket
    /// and task per call, the older design).
    #[arg(long, value_enum, default_value_t = RtpEngine::Batched)]
    pub rtp_engine: RtpEngine,
    /// Media worker threads for the RTP engine; 0: one per core.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub media_workers: usize,
    /// Address advertised in SDP for media (the public IP behind NAT). Default: the SIP
    /// address's IP.
    #[arg(long, value_name = "IP")]
    pub media_address: Option<IpAddr>,
    /// Networks (CIDR, comma-separated) allowed to send SIP; everyone else gets 403.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128",
        value_name = "CIDR,..."
    )]
    pub sip_allow: Vec<ipnet::IpNet>,
    /// Codecs SIP calls offer and accept, in order of preference (comma-separated): pcmu,
    /// pcma, g722 (wideband, 64 kbit/s), opus (RFC 7587 `opus/48000/2`, sent mono).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pcmu,pcma",
        value_name = "CODEC,..."
    )]
    pub sip_codecs: Vec<SipCodec>,
    /// Seconds without RTP before a SIP call is hung up.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub rtp_timeout: u64,
    /// On SIGTERM/Ctrl-C the node drains: it leaves call routing, refuses new calls with 503
    /// and waits this long for the calls up to end before hanging up the rest (a second
    /// signal stops waiting).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_timeout: u64,
    /// Refuse SIP calls that carry no X-Vaani-Call-Id/X-Vaani-Token (the answer webhook adds
    /// them); without it, allowlisted sources may call directly (sipp, a softphone).
    #[arg(long)]
    pub sip_require_token: bool,
    /// Digest credentials (USER:PASSWORD) that SIP peers outside --sip-allow must answer the
    /// node's 401 challenge with; wrong ones get 403. Prefer the environment variable: a
    /// command-line password shows in `ps`.
    #[arg(
        long,
        env = "VAANI_SIP_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub sip_auth: Option<String>,
    /// SIP trunks from a TOML file (`[[trunk]]` with `name`, `tenant`, `allow` networks and/or
    /// `auth_user` + `auth_password_env`): who may call, and whose calls they are. Replaces
    /// --sip-allow and --sip-auth.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sip_allow", "sip_auth"])]
    pub sip_trunks: Option<std::path::PathBuf>,
    /// Also take SIP over TLS on this address (e.g. 127.0.0.1:5061), with --sip-tls-cert and
    /// --sip-tls-key.
    #[arg(long, value_name = "ADDR", requires_all = ["sip_tls_cert", "sip_tls_key"])]
    pub sip_tls: Option<SocketAddr>,
    /// The TLS certificate chain (PEM, leaf first) for --sip-tls.
    #[arg(long, value_name = "FILE", requires = "sip_tls")]
    pub sip_tls_cert: Option<std::path::PathBuf>,
    /// The TLS private key (PEM) for --sip-tls.
    #[arg(long, value_name = "FILE", requires = "sip_tls")]
    pub sip_tls_key: Option<std::path::PathBuf>,
    /// Send calls the node places (`POST /node/calls`, `vaani dial`) whose target host is a
    /// name to this proxy (IP:port; the node does no DNS). Without it, targets must be IPs.
    #[arg(long, value_name = "ADDR")]
    pub sip_outbound_proxy: Option<SocketAddr>,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// `dev` (the running `vaani dev` in --data) or a SIP URI with an IP host.
    pub target: String,
    /// A line to say (repeatable, in order with --dtmf).
    #[arg(long)]
    pub say: Vec<String>,
    /// Keys to press (repeatable, in order with --say).
    #[arg(long)]
    pub dtmf: Vec<String>,
    /// A line to say over the agent's next reply, 1.5 s into it (barge-in; in order with
    /// --say).
    #[arg(long)]
    pub interrupt: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The agent spec whose lines the recogniser listens for (default: the sample agent).
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,
    /// Ask the node for this agent (`X-Vaani-Agent`; `vaani dev --agents DIR` serves them).
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// Transcribe the agent with the open-vocabulary model instead of its lines' grammar.
    #[arg(long)]
    pub open_vocabulary: bool,
    /// Tenant of the call (for `dev`).
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// espeak-ng voice the caller speaks with.
    #[arg(long, default_value = "en-us")]
    pub voice: String,
    /// Where the caller's SIP listens.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub sip: SocketAddr,
    /// The caller's RTP ports.
    #[arg(long, default_value = "40000-40999", value_name = "LOW-HIGH")]
    pub rtp_ports: vaani_media::sipnode::ports::PortRange,
    /// Codecs the call offers, in order of preference (comma-separated): pcmu, pcma, g722,
    /// opus.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pcmu,pcma",
        value_name = "CODEC,..."
    )]
    pub codecs: Vec<SipCodec>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct DialArgs {
    /// Who to call: a SIP URI whose host is an IP (the node does no DNS lookups unless it runs
    /// with --sip-outbound-proxy), e.g. sip:alice@127.0.0.1:5070.
    pub to: String,
    /// Base URL of the running `vaani dev`.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub dev: String,
    /// The tenant the call belongs to; the media token is minted for it.
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// The From user (caller id): 1-64 of A-Z a-z 0-9 + - _ . * #.
    #[arg(long, default_value = "vaani")]
    pub from: String,
    /// Seconds to let it ring before cancelling.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub answer_timeout: u64,
    /// Digest user for a trunk that challenges (401/407); the password is read from
    /// $VAANI_SIP_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub auth_user: Option<String>,
    /// Wait until the call ends and print how it went; exit 1 when it never connected.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub data: DataArg,
}

/// How the node runs RTP (`--rtp-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RtpEngine {
    Batched,
    PerPacket,
    PerCall,
}

/// A codec `vaani dev` carries over SIP/RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SipCodec {
    /// G.711 μ-law (payload type 0).
    Pcmu,
    /// G.711 A-law (payload type 8).
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio (payload type 9, `G722/8000`).
    G722,
    /// Opus at 48 kHz (dynamic payload type; 111 in our offers).
    Opus,
}

/// The app a `vaani dev` node answers calls with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppKind {
    /// Talk to the caller: the realtime pipeline with the agent in --agent.
    Agent,
    /// Play back what the caller says.
    Echo,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Check a webhook's signature / credentials. Prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify(VerifyArgs),
    /// Compute the signature headers a provider would send (for curl and tests).
    Sign(SignArgs),
    /// Parse a status/answer webhook body into the normalized call event (JSON on stdout).
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub provider: Provider,
    /// Auth token (Twilio, SignalWire, Plivo, Exotel) or Telnyx's Ed25519 public key (base64).
    #[arg(long)]
    pub secret: String,
    /// The full public URL the provider requested, query included.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// A request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    pub headers: Vec<String>,
    /// The raw request body; `-` reads stdin. Default: empty body.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Current time for timestamp checks (RFC 3339 or Unix seconds). Default: now.
    #[arg(long)]
    pub now: Option<String>,
    /// Telnyx replay window in seconds.
    #[arg(long, default_value_t = 300)]
    pub replay_window: u64,
    /// Plivo main-account auth token (checks X-Plivo-Signature-Ma-V3).
    #[arg(long)]
    pub main_secret: Option<String>,
    /// Exotel: the request's source IP, checked against --allow-cidr.
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
    /// Exotel: allowed source network (CIDR); repeatable.
    #[arg(long = "allow-cidr")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Exotel: required HTTP Basic user (the API key).
    #[arg(long)]
    pub basic_user: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[arg(long)]
    pub provider: Provider,
    /// Auth token, or for Telnyx the Ed25519 private key seed (base64, 32 bytes).
    #[arg(long)]
    pub secret: String,
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "POST")]
    pub method: String,
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Content type of the body (form unless it says json).
    #[arg(long, default_value = "application/x-www-form-urlencoded")]
    pub content_type: String,
    /// Plivo nonce / Telnyx timestamp (default: random / now).
    #[arg(long)]
    pub nonce: Option<String>,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[arg(long)]
    pub provider: Provider,
    /// Body content type; default: JSON if the body looks like JSON, else form-encoded.
    #[arg(long)]
    pub content_type: Option<String>,
    /// The raw body; `-` or absent reads stdin.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Query string of the webhook URL (our call id may travel there as vaani_call_id=…).
    #[arg(long)]
    pub query: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CallsCmd {
    /// List calls, newest first.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        data: DataArg,
    },
    /// Show one call (our call id or the provider's call id) with its events.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create or update a tenant, and optionally one provider's credentials.
    Set(TenantSetArgs),
    /// Show a tenant (secrets masked unless --reveal).
    Show {
        id: String,
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Args)]
pub struct TenantSetArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Said to callers when no media node can take the call.
    #[arg(long)]
    pub fallback_message: Option<String>,
    #[arg(long, requires = "secret")]
    pub provider: Option<Provider>,
    /// The provider's auth token (Telnyx: Ed25519 public key, base64).
    #[arg(long, requires = "provider")]
    pub secret: Option<String>,
    /// Account SID / Auth ID / project id.
    #[arg(long)]
    pub account: Option<String>,
    /// Exotel API key (HTTP Basic user) / Telnyx API key.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Plivo main-account token.
    #[arg(long)]
    pub main_secret: Option<String>,
    /// Exotel: allowed source network; repeatable.
    #[arg(long = "allow-cidr")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    #[command(flatten)]
    pub data: DataArg,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Dev(args) => crate::dev::run(args).await.map(|()| ExitCode::SUCCESS),
        Cmd::Webhook(WebhookCmd::Verify(a)) => Ok(verify(a)),
        Cmd::Webhook(WebhookCmd::Sign(a)) => sign(a),
        Cmd::Webhook(WebhookCmd::Parse(a)) => Ok(parse(a)),
        Cmd::Calls(c) => calls(c).await,
        Cmd::Tenant(t) => tenant(t).await,
        Cmd::Dial(a) => crate::dial::run(a).await,
        Cmd::Call(a) => crate::call::run(a).await,
    }
}

/// Exit code 2 with a message: a usage error.
fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn read_body(path: Option<&PathBuf>, stdin_if_none: bool) -> std::io::Result<Vec<u8>> {
    match path {
        Some(p) if p.as_os_str() != "-" => std::fs::read(p),
        None if !stdin_if_none => Ok(Vec::new()),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        }
    }
}

fn parse_now(s: Option<&str>) -> Result<DateTime<Utc>, String> {
    let Some(s) = s else { return Ok(Utc::now()) };
    if let Ok(n) = s.trim().parse::<i64>() {
        return DateTime::from_timestamp(n, 0).ok_or_else(|| format!("--now out of range: {s}"));
    }
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| format!("--now must be RFC 3339 or Unix seconds, got {s:?}"))
}

fn build_request(
    method: &str,
    url: &str,
    headers: &[String],
    body: Vec<u8>,
    source_ip: Option<IpAddr>,
) -> Result<WebhookRequest, String> {
    let method = http::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("bad --method {method:?}"))?;
    if !(url.starts_with("https://")
        || url.starts_with("http://")
        || url.starts_with("wss://")
        || url.starts_with("ws://"))
    {
        return Err(format!(
            "--url must be an absolute http(s) or ws(s) URL, got {url:?}"
        ));
    }
    let mut map = http::HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not 'Name: value'"))?;
        let name = http::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("bad header name in {h:?}"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("bad header value in {h:?}"))?;
        map.append(name, value);
    }
    Ok(WebhookRequest {
        method,
        url: url.to_string(),
        headers: map,
        body: body.into(),
        source_ip,
    })
}

fn verify(a: VerifyArgs) -> ExitCode {
    let body = match read_body(a.body_file.as_ref(), false) {
        Ok(b) => b,
        Err(e) => return usage(format_args!("cannot read --body-file: {e}")),
    };
    let now = match parse_now(a.now.as_deref()) {
        Ok(n) => n,
        Err(e) => return usage(e),
    };
    let req = match build_request(&a.method, &a.url, &a.headers, body, a.source_ip) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let mut cfg = VerifyConfig::new(a.secret, now);
    cfg.main_account_secret = a.main_secret;
    cfg.replay_window = std::time::Duration::from_secs(a.replay_window);
    cfg.exotel = ExotelAuth {
        basic_user: a.basic_user,
        allow_cidrs: a.allow_cidrs,
    };
    match vaani_telephony::verify(a.provider, &req, &cfg) {
        Ok(()) => {
            println!("valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("invalid: {e}");
            ExitCode::from(1)
        }
    }
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let body = read_body(a.body_file.as_ref(), false).context("reading --body-file")?;
    let header = format!("Content-Type: {}", a.content_type);
    let req = match build_request(&a.method, &a.url, &[header], body, None) {
        Ok(r) => r,
        Err(e) => return Ok(usage(e)),
    };
    let headers =
        vaani_telephony::sign_headers(a.provider, &a.secret, &req, a.nonce.as_deref(), Utc::now())?;
    for (k, v) in headers {
        println!("{k}: {v}");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(a: ParseArgs) -> ExitCode {
    let body = match read_body(a.body_file.as_ref(), true) {
        Ok(b) => b,
        Err(e) => return usage(format_args!("cannot read the body: {e}")),
    };
    match vaani_telephony::parse(
        a.provider,
        a.content_type.as_deref(),
        &body,
        a.query.as_deref(),
    ) {
        Ok(ev) => match serde_json::to_string(&ev) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot serialize the event: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: malformed {} webhook: {e}", a.provider);
            ExitCode::from(1)
        }
    }
}

async fn find_call(stores: &Stores, id: &str) -> anyhow::Result<Option<vaani_store::CallRecord>> {
    let all = stores.calls.list_calls(None, usize::MAX).await?;
    Ok(all
        .into_iter()
        .find(|c| c.call_id == id || c.provider_call_id == id))
}

async fn calls(c: CallsCmd) -> anyhow::Result<ExitCode> {
    match c {
        CallsCmd::List {
            json,
            tenant,
            limit,
            data,
        } => {
            let stores = crate::local::open_store(&data.dir())?;
            let list = stores.calls.list_calls(tenant.as_deref(), limit).await?;
            if json {
                let rows: Vec<_> = list.iter().map(call_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if list.is_empty() {
                println!("no calls in {}", data.dir().display());
            } else {
                println!("CALL                           TENANT     PROVIDER   STATUS      FROM             TO                 SECS CREATED");
                for r in &list {
                    let s = &r.state;
                    println!(
                        "{:<30} {:<10} {:<10} {:<11} {:<16} {:<16} {:>6} {}",
                        r.call_id,
                        r.tenant,
                        r.provider,
                        s.status,
                        s.from
                            .as_deref()
                            .map(vaani_core::phone::mask)
                            .unwrap_or_default(),
                        s.to.as_deref()
                            .map(vaani_core::phone::mask)
                            .unwrap_or_default(),
                        s.duration_s.map(|d| d.to_string()).unwrap_or_default(),
                        r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CallsCmd::Show { id, json, data } => {
            let stores = crate::local::open_store(&data.dir())?;
            let rec = find_call(&stores, &id).await?;
            // The media node's report: by our call id, or the SIP Call-ID / stream id.
            let report = match stores.reports.get_report(&id).await? {
                Some(r) => Some(r),
                None => match &rec {
                    Some(rec) => stores.reports.get_report(&rec.call_id).await?,
                    None => None,
                },
            };
            let mut v = match (&rec, &report) {
                (Some(rec), _) => {
                    let events = stores.events.list_events(&rec.tenant, &rec.call_id).await?;
                    let mut v = call_json(rec);
                    v["events"] = serde_json::Value::Array(
                        events
                            .iter()
                            .map(|e| serde_json::json!({"event_id": e.event_id, "received_at": e.received_at, "enqueued": e.enqueued, "event": e.event}))
                            .collect(),
                    );
                    v
                }
                (None, Some(r)) => serde_json::json!({
                    "call_id": r.call_id.clone().unwrap_or_else(|| r.transport_id.clone()),
                    "tenant": r.tenant,
                    "created_at": r.created_at,
                }),
                (None, None) => {
                    eprintln!("error: no call {id:?} in {}", data.dir().display());
                    return Ok(ExitCode::from(1));
                }
            };
            if let (Some(r), Some(obj)) = (&report, v.as_object_mut()) {
                obj.insert("sip_call_id".into(), r.transport_id.clone().into());
                if let serde_json::Value::Object(body) = &r.body {
                    for key in [
                        "agent",
                        "engines",
                        "transcript",
                        "turns",
                        "latency",
                        "usage",
                        "engine_errors",
                    ] {
                        if let Some(val) = body.get(key) {
                            obj.insert(key.into(), val.clone());
                        }
                    }
                }
            }
            if json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn call_json(r: &vaani_store::CallRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "call_id": r.call_id,
        "tenant": r.tenant,
        "provider": r.provider,
        "provider_call_id": r.provider_call_id,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "node_id": r.node_id,
        "version": r.version,
    });
    if let (Some(obj), Ok(serde_json::Value::Object(state))) =
        (v.as_object_mut(), serde_json::to_value(&r.state))
    {
        for (k, val) in state {
            if k != "detail_key" {
                obj.insert(k, val);
            }
        }
    }
    v
}

fn mask_secret(s: &str) -> String {
    if s.len() <= 4 {
        "****".into()
    } else {
        format!("{}{}", s.chars().take(2).collect::<String>(), "*".repeat(6))
    }
}

async fn tenant(t: TenantCmd) -> anyhow::Result<ExitCode> {
    match t {
        TenantCmd::Set(a) => {
            if !vaani_core::tenant::valid_id(&a.id) {
                bail!("tenant id must be 1-64 characters of A-Z a-z 0-9 - _");
            }
            let stores = crate::local::open_store(&a.data.dir())?;
            let mut tenant = stores
                .tenants
                .get_tenant(&a.id)
                .await?
                .unwrap_or_else(|| Tenant {
                    id: a.id.clone(),
                    name: a.id.clone(),
                    fallback_message: crate::dev::DEFAULT_FALLBACK.to_string(),
                    credentials: Default::default(),
                });
            if let Some(n) = a.name {
                tenant.name = n;
            }
            if let Some(m) = a.fallback_message {
                tenant.fallback_message = m;
            }
            if let (Some(p), Some(secret)) = (a.provider, a.secret) {
                let entry = tenant.credentials.entry(p).or_default();
                *entry = ProviderCredentials {
                    account: a.account.unwrap_or_else(|| entry.account.clone()),
                    secret,
                    main_account_secret: a
                        .main_secret
                        .or_else(|| entry.main_account_secret.clone()),
                    api_key: a.api_key.or_else(|| entry.api_key.clone()),
                    allow_cidrs: if a.allow_cidrs.is_empty() {
                        entry.allow_cidrs.clone()
                    } else {
                        a.allow_cidrs.iter().map(|c| c.to_string()).collect()
                    },
                };
            }
            stores.tenants.put_tenant(&tenant).await?;
            println!("tenant {} saved", tenant.id);
            Ok(ExitCode::SUCCESS)
        }
        TenantCmd::Show { id, reveal, data } => {
            let stores = crate::local::open_store(&data.dir())?;
            let Some(mut tenant) = stores.tenants.get_tenant(&id).await? else {
                eprintln!("error: no tenant {id:?}");
                return Ok(ExitCode::from(1));
            };
            if !reveal {
                for c in tenant.credentials.values_mut() {
                    c.secret = mask_secret(&c.secret);
                    c.main_account_secret = c.main_account_secret.as_deref().map(mask_secret);
                }
            }
            println!("{}", serde_json::to_string_pretty(&tenant)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
