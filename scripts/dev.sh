#!/usr/bin/env bash
# Run Vaani locally on embedded defaults: builds the `vaani` binary and starts `vaani dev`.
# Extra arguments go to `vaani dev` (e.g. --http 127.0.0.1:9090 --data /tmp/vaani).
set -euo pipefail
cd "$(dirname "$0")/.."
# A C toolchain, and the offline speech engines the media node links (espeak-ng TTS,
# pocketsphinx STT) with their data.
need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential pkg-config)
for pkg in espeak-ng libespeak-ng-dev pocketsphinx pocketsphinx-en-us libpocketsphinx-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${need_apt[@]}"
fi
# Only the CLI's dependency tree: the embedded store, no AWS SDK.
cargo build --release --locked --bin vaani
exec target/release/vaani dev "$@"
