#!/usr/bin/env bash
# The media node's SIP/RTP load run (bench/README.md). Starts `vaani dev --app echo` pinned to
# one core, runs the sipload generator pinned to another against it, once per N, and prints
# the generator's report (the RESULT lines make the table).
#
#   cargo build --release -p vaani --bin vaani -p vaani-media --example sipload
#   bench/loadrun.sh 500 1000 2000                 # the media engine (batched I/O)
#   ENGINE=per-call bench/loadrun.sh 500 1000      # a socket and task per call (older design)
#   ENGINE=per-packet bench/loadrun.sh 1000        # the engine with one syscall per datagram
#   bench/loadrun.sh sipp 200                      # sipp as the caller instead (cross-check)
#   CODEC=g722 bench/loadrun.sh 1000               # G.722 calls (the node offers g722 only)
#
# Environment: ENGINE (batched), CODEC (pcmu; or g722), HOLD seconds (20), WARMUP (3), RATE calls/s (400),
# RTP_PORTS (20000-29999: a socket per call needs a port per call), NODE_CPU (0), GEN_CPU (1), SOCKETS generator RTP sockets (4), PRIO (`chrt -f 10`: this
# machine is shared with other work, and pinning alone does not keep it off the node's core;
# at normal priority, even at nice -20, the node lost packets while idle half the time. As
# real-time tasks the node and generator take their cores when they wake; the kernel's RT
# throttling still leaves 5% to the rest. Needs root; PRIO= runs them as normal tasks).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-batched}
CODEC=${CODEC:-pcmu}
HOLD=${HOLD:-20}
WARMUP=${WARMUP:-3}
RATE=${RATE:-400}
NODE_CPU=${NODE_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
SOCKETS=${SOCKETS:-4}
PRIO=${PRIO-chrt -f 10}
RTP_PORTS=${RTP_PORTS:-20000-29999}
HTTP=127.0.0.1:18080
SIP=127.0.0.1:15060
bin=target/release/vaani
gen=target/release/examples/sipload

mode=sipload
if [ "${1:-}" = sipp ]; then
    mode=sipp
    shift
    if [ "$CODEC" != pcmu ]; then
        echo "the sipp scenario sends PCMU only: CODEC=$CODEC is for the sipload generator" >&2
        exit 2
    fi
fi

start_node() {
    data=$(mktemp -d)
    $PRIO taskset -c "$NODE_CPU" "$bin" dev --app echo --http "$HTTP" --sip "$SIP" --data "$data" \
        --max-calls 100000 --rtp-ports "$RTP_PORTS" --rtp-engine "$ENGINE" --rtp-timeout 60 \
        --sip-codecs "$CODEC" \
        >"$data/out" 2>"$data/err" &
    pid=$!
    for _ in $(seq 100); do
        grep -q '^ready' "$data/out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "node did not start:" >&2
    cat "$data/err" >&2
    exit 1
}

stop_node() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
}

for n in "$@"; do
    start_node
    echo "== $mode N=$n engine=$ENGINE codec=$CODEC hold=${HOLD}s rate=${RATE}/s node cpu $NODE_CPU, generator cpu $GEN_CPU; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$mode" = sipload ]; then
        $PRIO taskset -c "$GEN_CPU" "$gen" --sip "$SIP" --http "$HTTP" --pid "$pid" --calls "$n" \
            --rate "$RATE" --warmup "$WARMUP" --hold "$HOLD" --sockets "$SOCKETS" \
            --codec "$CODEC" || true
    else
        # 1 s of a 440 Hz tone as headerless u-law, looped by sipp's rtp_stream.
        audio=$(mktemp --suffix=.ul)
        python3 - "$audio" <<'PY'
import math, sys
def ulaw(s):
    s = max(-32635, min(32635, s))
    sign = 0x80 if s < 0 else 0
    s = abs(s) + 0x84
    exp = 7
    while exp > 0 and not (s & (0x4000 >> (7 - exp))):
        exp -= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF
open(sys.argv[1], "wb").write(bytes(ulaw(int(10000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(8000)))
PY
        scenario=$(mktemp --suffix=.xml)
        sed "s|@AUDIO@|$audio|" bench/sipp/uac_load.xml >"$scenario"
        cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
        t0=$(date +%s.%N)
        $PRIO taskset -c "$GEN_CPU" sipp -sf "$scenario" -s echo \
            -r "$RATE" -l "$n" -m "$n" -d $((HOLD * 1000)) -mi 127.0.0.1 -mp 40000 \
            -trace_stat -stf /tmp/sipp_load_stat.csv -nostdin -timeout $((HOLD + 60)) \
            "$SIP" >/tmp/sipp_load.out 2>&1 || echo "sipp exited $?"
        t1=$(date +%s.%N)
        cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
        tick=$(getconf CLK_TCK)
        metrics=$(curl -s "http://$HTTP/metrics")
        echo "node CPU over the whole run: $(echo "($cpu1 - $cpu0) / $tick / ($t1 - $t0) * 100" | bc -l | cut -c1-5)% of a core"
        echo "$metrics" | grep -E '^vaani_(rtp_packets|calls_ended)' || true
        tail -5 /tmp/sipp_load.out
        rm -f "$audio" "$scenario"
    fi
    stop_node
done
