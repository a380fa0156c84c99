#!/usr/bin/env bash
# Mesh control bytes per second per link at rest, by message kind, on real relays.
#
# Starts N relays (default 3) on 127.0.0.1 in a full mesh at the default announcement
# interval (10 s) unless ANNOUNCE_MS is set, waits WARM seconds, then reads the middle
# relay's /v1/status counters.control_by_kind twice, WINDOW seconds apart.
# Bytes are mesh message bytes (control frames with their 4-byte length prefix, and probe
# datagrams), QUIC/UDP headers excluded.
#
# Usage: relay-smol/scripts/control_at_rest.sh [N]   (after `cargo build -p fastpubsub-relay`)
set -euo pipefail
N=${1:-3}
WARM=${WARM:-25}
WINDOW=${WINDOW:-60}
BIN=${BIN:-target/debug/fastpubsub-relay}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
"$BIN" mesh-ca --dir "$DIR/ca" >/dev/null
declare -a MESH ADMIN
for i in $(seq 0 $((N - 1))); do
  "$BIN" mesh-cert --name "r$i" --ca-dir "$DIR/ca" --out "$DIR/ca" >/dev/null
done
for i in $(seq 0 $((N - 1))); do
  port=$((17100 + i))
  MESH[$i]="127.0.0.1:$port"
  ADMIN[$i]="127.0.0.1:$((17200 + i))"
  peers=()
  for j in $(seq 0 $((i - 1))); do peers+=(--peer "r$j@127.0.0.1:$((17100 + j))"); done
  extra=()
  if [ -n "${ANNOUNCE_MS:-}" ]; then extra+=(--announce-interval-ms "$ANNOUNCE_MS"); fi
  RUST_LOG=warn "$BIN" run --listen 127.0.0.1:0 --insecure-no-auth --admin-listen "${ADMIN[$i]}" \
    --mesh-listen "${MESH[$i]}" --name "r$i" --region test --lat "$((10 * i))" --lon "$((20 * i))" \
    --mesh-cert "$DIR/ca/r$i.pem" --mesh-key "$DIR/ca/r$i.key" --mesh-ca "$DIR/ca/ca.pem" \
    "${peers[@]}" "${extra[@]}" >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep "$WARM"
M=$((N / 2))
curl -s "http://${ADMIN[$M]}/v1/status" >"$DIR/s0.json"
sleep "$WINDOW"
curl -s "http://${ADMIN[$M]}/v1/status" >"$DIR/s1.json"
curl -s "http://${ADMIN[$M]}/v1/mesh" >"$DIR/mesh.json"
python3 - "$DIR" "$WINDOW" <<'PY'
import json, sys
d, window = sys.argv[1], float(sys.argv[2])
s0, s1 = (json.load(open(f"{d}/s{i}.json")) for i in (0, 1))
mesh = json.load(open(f"{d}/mesh.json"))
links = sum(1 for l in s1["links"] if l["up"])
k0, k1 = s0["counters"]["control_by_kind"], s1["counters"]["control_by_kind"]
print(f"relay {s1['identity']['name']}: {links} links up, {len(mesh['relays'])} relays in /v1/mesh, window {window:.0} s")
tot = [0.0, 0.0]
for kind in k1:
    v = [(k1[kind][i] - k0.get(kind, [0, 0])[i]) / window / max(links, 1) for i in (0, 1)]
    tot = [tot[0] + v[0], tot[1] + v[1]]
    if v[0] or v[1]:
        print(f"  {kind:<26} sent {v[0]:8.1f} B/s  received {v[1]:8.1f} B/s  per link")
print(f"  {'total':<26} sent {tot[0]:8.1f} B/s  received {tot[1]:8.1f} B/s  per link")
a = s1["counters"]["announce"]
print(f"  announce counters: {a}")
PY
