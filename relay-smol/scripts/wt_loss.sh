#!/usr/bin/env bash
# Loss benchmark (docs/webtransport.md, README): delivery latency p50/p99 over WebTransport
# (control stream, lines, datagrams) against WebSocket when the client path loses packets.
#
# A network namespace (veth pair 10.77.0.1 <-> 10.77.0.2) holds the subscribers; inside it
# iptables drops each packet in and out with probability P (`-m statistic --mode random`,
# TCP and UDP alike; this kernel has no netem). The relay and the publisher stay in the host
# namespace: only the subscribers' path is lossy. Per P: SUBS subscribers of each kind, one
# WebSocket publisher at RATE msgs/s for COUNT messages of 64 B.
#
# Needs root (ip netns, iptables). Usage: relay-smol/scripts/wt_loss.sh [> table.md]
# Env: COUNT (10000), RATE (1000), SUBS (2), LOSSES ("0 0.01 0.03"), BIN (target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${COUNT:-10000}
RATE=${RATE:-1000}
SUBS=${SUBS:-2}
LOSSES=${LOSSES:-"0 0.01 0.03"}
BIN=${BIN:-target/release}
NS=fpswtloss$$
HOST_IF=vfps$$
NS_IF=vfpsc$$
PORT=18443
MODES="ws wt wt-line wt-dgram"
if [ ! -x "$BIN/examples/wt_loss" ] || [ ! -x "$BIN/fastpubsub-relay" ]; then
    cargo build --release -p fastpubsub-relay --example wt_loss >&2
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    ip link del "$HOST_IF" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add 10.77.0.1/24 dev "$HOST_IF"
ip link set "$HOST_IF" up
ip netns exec "$NS" ip addr add 10.77.0.2/24 dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up

"$BIN/fastpubsub-relay" run --insecure-no-auth --admin-listen off \
    --listen 10.77.0.1:$PORT --wt-listen 10.77.0.1:$PORT >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "webtransport on" "$WORK/relay.log" && break; sleep 0.1; done
grep -q "webtransport on" "$WORK/relay.log" || { cat "$WORK/relay.log" >&2; exit 1; }

SECS=$((COUNT / RATE + 20))
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf '| loss (each way) | transport | delivered | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|\n'
for P in $LOSSES; do
    ip netns exec "$NS" iptables -F
    if [ "$P" != "0" ]; then
        ip netns exec "$NS" iptables -A INPUT -m statistic --mode random --probability "$P" -j DROP
        ip netns exec "$NS" iptables -A OUTPUT -m statistic --mode random --probability "$P" -j DROP
    fi
    SUBPIDS=()
    for m in $MODES; do
        for i in $(seq "$SUBS"); do
            case $m in ws) url="ws://10.77.0.1:$PORT/ws" ;; *) url="https://10.77.0.1:$PORT/" ;; esac
            ip netns exec "$NS" "$BIN/examples/wt_loss" sub "$m" "$url" "$COUNT" "$SECS" \
                >"$WORK/$P-$m.$i.out" 2>"$WORK/$P-$m.$i.err" &
            SUBPIDS+=($!)
        done
    done
    for f in "$WORK"/"$P"-*.out; do
        for _ in $(seq 300); do grep -q ready "$f" && break; sleep 0.1; done
        grep -q ready "$f" || { echo "subscriber $f not ready: $(cat "${f%.out}.err")" >&2; exit 1; }
    done
    "$BIN/examples/wt_loss" pub "ws://10.77.0.1:$PORT/ws" "$COUNT" "$RATE" 64
    for p in "${SUBPIDS[@]}"; do wait "$p" || true; done
    for m in $MODES; do
        # Per kind: delivered summed over its subscribers; latencies: the worse subscriber.
        python3 - "$P" "$m" "$WORK"/"$P"-"$m".*.out <<'PY'
import json, sys
p, mode, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [json.loads(l) for f in files for l in open(f) if l.startswith("{")]
exp = sum(r["expected"] for r in rows); got = sum(r["received"] for r in rows)
name = {"ws": "WebSocket", "wt": "WebTransport, control stream", "wt-line": "WebTransport, uni line", "wt-dgram": "WebTransport, datagrams"}[mode]
w = lambda k: max((r[k] for r in rows), default=float("nan"))
print(f"| {float(p)*100:g} % | {name} | {got}/{exp} | {w('p50_ms'):.2f} | {w('p99_ms'):.2f} | {w('max_ms'):.2f} |")
PY
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
