#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine with Rust. Installs what it needs
# (idempotently), starts moto_server on 127.0.0.1 for the DynamoDB/SQS contract tests, runs every
# Rust test and the CDK app's tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*" >&2; }

# --- system packages --------------------------------------------------------------------------
scripts/deps.sh

# --- python tools -----------------------------------------------------------------------------
if ! command -v moto_server >/dev/null; then
  log "installing moto[server]"
  python3 -m pip install --quiet 'moto[server]'
fi

# Never let an AWS SDK probe the EC2 metadata address or read real credentials.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=ap-south-1
unset AWS_PROFILE AWS_SESSION_TOKEN || true

# --- moto ---------------------------------------------------------------------------------------
moto_port=${VAANI_MOTO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
moto_log=$(mktemp -t vaani-moto.XXXXXX)
log "starting moto_server on 127.0.0.1:$moto_port"
moto_server -H 127.0.0.1 -p "$moto_port" >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; rm -f "$moto_log"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$moto_port/moto-api/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$moto_port/moto-api/" >/dev/null || { cat "$moto_log"; echo "moto_server did not start" >&2; exit 1; }
export VAANI_TEST_MOTO_URL="http://127.0.0.1:$moto_port" VAANI_REQUIRE_MOTO=1
# sipp, baresip, Chromium and the speech packages are installed above: the SIP, WebRTC and
# speech tests must not skip them.
export VAANI_REQUIRE_SIPP=1 VAANI_REQUIRE_BARESIP=1 VAANI_REQUIRE_CHROMIUM=1
export VAANI_REQUIRE_SPEECH=1

# --- Rust ---------------------------------------------------------------------------------------
log "cargo test (workspace)"
cargo test --workspace --all-targets --locked --no-fail-fast "$@"
cargo test --workspace --doc --locked

# --- CDK ----------------------------------------------------------------------------------------
if [ -f "$root/cdk/package.json" ]; then
  log "CDK app tests"
  (cd "$root/cdk" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm test --silent)
fi
log "all tests passed"
