#!/usr/bin/env bash
# Start a local moto server (DynamoDB + SQS + S3 emulator) for the AWS adapter's tests.
# Idempotent: installs moto[server] only if missing, starts the server only if nothing answers.
#   PORT=5055 scripts/moto.sh      # prints the URL, e.g. http://127.0.0.1:5055
#   VAANI_TEST_MOTO_URL=$(scripts/moto.sh) cargo test -p vaani-store
set -euo pipefail

PORT="${PORT:-5055}"
HOST=127.0.0.1
URL="http://${HOST}:${PORT}"
LOG="${MOTO_LOG:-${TMPDIR:-/tmp}/vaani-moto-${PORT}.log}"

answers() {
  # moto's own API answers GET with 200 once the server is up.
  curl -fsS -o /dev/null --max-time 2 "${URL}/moto-api/" 2>/dev/null
}

if answers; then
  echo "${URL}"
  exit 0
fi

if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  echo "moto.sh: installing moto[server]" >&2
  python3 -m pip install --quiet 'moto[server]' >&2
fi

MOTO=(moto_server)
command -v moto_server >/dev/null 2>&1 || MOTO=(python3 -m moto.server)

echo "moto.sh: starting ${MOTO[*]} on ${URL} (log: ${LOG})" >&2
nohup "${MOTO[@]}" -H "${HOST}" -p "${PORT}" >"${LOG}" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
  if answers; then
    echo "${URL}"
    exit 0
  fi
  if ! kill -0 "${pid}" 2>/dev/null; then
    echo "moto.sh: moto_server exited; last log lines:" >&2
    tail -n 20 "${LOG}" >&2 || true
    exit 1
  fi
  sleep 0.2
done
echo "moto.sh: moto_server did not answer on ${URL} within 20 s (log: ${LOG})" >&2
exit 1
