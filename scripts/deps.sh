#!/usr/bin/env bash
# System packages, on Debian 12 (idempotent: installs only what is missing).
#   scripts/deps.sh build   what building needs: a C toolchain, pkg-config, libopus-dev (Opus
#                           for WebRTC calls), espeak-ng, flite and pocketsphinx (offline
#                           speech);
#                           scripts/dev.sh and .ci/run (before it lints)
#   scripts/deps.sh         that and what the tests need: node, sipp, baresip, sox, curl,
#                           Chromium; scripts/test.sh
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need_apt+=(libopus-dev)
# The offline speech engines the media node links (espeak-ng TTS, pocketsphinx STT) and their
# data.
for pkg in espeak-ng libespeak-ng-dev flite1-dev pocketsphinx pocketsphinx-en-us libpocketsphinx-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ "${1:-all}" != build ]; then
  command -v node >/dev/null || need_apt+=(nodejs npm)
  command -v sipp >/dev/null || need_apt+=(sip-tester)
  command -v baresip >/dev/null || need_apt+=(baresip)
  command -v sox >/dev/null || need_apt+=(sox)
  command -v curl >/dev/null || need_apt+=(curl)
  command -v chromium >/dev/null || need_apt+=(chromium)
  # Real recorded speech with transcripts, for the speech tests.
  for pkg in asterisk-core-sounds-en-wav asterisk-core-sounds-en; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
  done
fi
if ((${#need_apt[@]})); then
  printf '\n==> installing %s\n' "${need_apt[*]}" >&2
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${need_apt[@]}"
fi
