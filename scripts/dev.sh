#!/usr/bin/env bash
# Run Vaani locally on embedded defaults: builds the `vaani` binary and starts `vaani dev`.
# Extra arguments go to `vaani dev` (e.g. --http 127.0.0.1:9090 --data /tmp/vaani).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
# Only the CLI's dependency tree: the embedded store, no AWS SDK.
cargo build --release --locked --bin vaani
exec target/release/vaani dev "$@"
