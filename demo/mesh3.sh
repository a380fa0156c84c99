#!/usr/bin/env bash
# Three relays on 127.0.0.1 with the measured RTTs of Tokyo, Novosibirsk and Frankfurt
# (shared/data/latency: Tokyo→Frankfurt 221.8 ms direct, 180.0 ms through Novosibirsk),
# each link through fastpubsub-linkemu. Shows Tokyo's route to Frankfurt and the saving,
# then a WebSocket publish at Tokyo reaching a subscriber at Frankfurt.
#
#   demo/mesh3.sh            # uses target/release if built, else target/debug
#   BIN=path/to/dir demo/mesh3.sh
#
# Stops everything it started on exit (Ctrl-C or the end).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$( [ -x target/release/fastpubsub-relay ] && echo target/release || echo target/debug )}
RELAY=$BIN/fastpubsub-relay
EMU=$BIN/fastpubsub-linkemu
[ -x "$RELAY" ] && [ -x "$EMU" ] || { echo "build first: cargo build --release -p fastpubsub-relay"; exit 1; }

# One-way delays are RTT/2 of the data set's rows (Tokyo→Frankfurt 221.77 ms,
# Tokyo→Novosibirsk 82.88 ms, Novosibirsk→Frankfurt 96.95 ms: 179.8 ms through N).
D=$(mktemp -d /tmp/fastpubsub-mesh3.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT INT TERM

csv=../shared/data/latency/matrix.csv
[ -f "$csv" ] || csv=/work/shared/data/latency/matrix.csv
rtt() { awk -F, -v a="$1" -v b="$2" '$1==a && $2==b {print $3}' "$csv" 2>/dev/null | head -1; }
TF=$(rtt Tokyo Frankfurt); TN=$(rtt Tokyo Novosibirsk); NF=$(rtt Novosibirsk Frankfurt)
TF=${TF:-221.8}; TN=${TN:-90.0}; NF=${NF:-90.0}
half() { awk -v x="$1" 'BEGIN { printf "%.2fms", x / 2 }'; }
echo "RTTs from the data set: Tokyo–Frankfurt $TF ms, Tokyo–Novosibirsk $TN ms, Novosibirsk–Frankfurt $NF ms"

$RELAY mesh-ca --dir "$D/ca" >/dev/null
for n in tokyo novosibirsk frankfurt; do $RELAY mesh-cert --name $n --ca-dir "$D/ca" --out "$D" >/dev/null; done

port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_relay() { # name http_port mesh_port peers...
  local name=$1 http=$2 mesh=$3; shift 3
  local peers=(); for p in "$@"; do peers+=(--peer "$p"); done
  RUST_LOG=${RUST_LOG:-warn} $RELAY run --listen 127.0.0.1:$http --insecure-no-auth \
    --mesh-listen 127.0.0.1:$mesh --name $name --region demo \
    --mesh-cert "$D/$name.pem" --mesh-key "$D/$name.key" --mesh-ca "$D/ca/ca.pem" \
    "${peers[@]}" > "$D/$name.log" 2>&1 &
  PIDS+=($!)
}
start_emu() { # listen_port target_port delay
  $EMU --listen 127.0.0.1:$1 --target 127.0.0.1:$2 --delay "$3" < /dev/null 2> "$D/emu-$1.log" &
  PIDS+=($!)
}

HT=18101 HN=18102 HF=18103
MT=$(port) MN=$(port) MF=$(port) ETN=$(port) ETF=$(port) ENF=$(port)
start_relay frankfurt $HF $MF
start_emu $ENF $MF "$(half "$NF")"
start_relay novosibirsk $HN $MN frankfurt@127.0.0.1:$ENF
start_emu $ETN $MN "$(half "$TN")"
start_emu $ETF $MF "$(half "$TF")"
start_relay tokyo $HT $MT novosibirsk@127.0.0.1:$ETN frankfurt@127.0.0.1:$ETF

echo "waiting for routes..."
for i in $(seq 1 100); do
  if curl -s 127.0.0.1:$HT/v1/status | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if any(r["dest"] == "frankfurt" and r["next_hop"] == "novosibirsk" for r in s.get("routes", [])) else 1)
' 2>/dev/null; then break; fi
  sleep 0.1
done
sleep 3  # let the smoothed metrics settle
curl -s 127.0.0.1:$HT/v1/status > "$D/status.json"
python3 - "$D/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("\nTokyo links (measured by probes):")
for l in s["links"]:
    print("  %-12s rtt %7.1f ms  min %7.1f  jitter %5.2f  loss %.1f %%  up %s"
          % (l["peer"], l["rtt_ms"] or 0, l["min_rtt_ms"], l["jitter_ms"], l["loss_pct"], l["up"]))
print("Tokyo routes (metric = one-way latency estimate):")
for r in s["routes"]:
    d = r["direct_metric_ms"]
    extra = "   direct %7.1f ms   saving %.1f ms" % (d, r["saving_ms"]) if d else ""
    print("  to %-12s via %-12s %7.1f ms%s" % (r["dest"], r["next_hop"], r["metric_ms"] or 0, extra))
PY

echo
echo "publish at Tokyo, subscriber at Frankfurt:"
timeout 10 $RELAY sub --url ws://127.0.0.1:$HF/ws --count 1 demo 'demo.#' > "$D/sub.out" 2>&1 &
SUBPID=$!
sleep 1.5   # the subscription's interest reaches Tokyo
T0=$(date +%s%N)
$RELAY pub --url ws://127.0.0.1:$HT/ws demo demo.hello "hello from tokyo" >/dev/null 2>&1 || true
wait $SUBPID 2>/dev/null || true
T1=$(date +%s%N)
echo "  frankfurt got: $(cat "$D/sub.out")   (publish→delivery incl. process start: $(( (T1 - T0) / 1000000 )) ms)"
echo
echo "Tokyo's /v1/status: curl -s 127.0.0.1:$HT/v1/status   (Ctrl-C to stop; stopping in 5 s)"
sleep 5
