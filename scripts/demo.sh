#!/usr/bin/env bash
# demo.sh — the whole loop, live: flywheel dev against the real Kafka and
# ClickHouse started by `make services-up`, retraining every 10 seconds, and
# the simulated product app sending traffic and clicks. Ends by itself and
# prints reward rate by model version next to random and oracle.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/bin/flywheel"
ADDR="${DEMO_ADDR:-127.0.0.1:8080}"
EVENTS="${DEMO_EVENTS:-12000}"
RATE="${DEMO_RATE:-200}"
LOG="$ROOT/.services/demo.log"
mkdir -p "$ROOT/.services"

start=$SECONDS
rm -rf "$ROOT/.services/demo-spool"
echo "demo: fresh demo database flywheel_demo"
clickhouse-client --port 9000 --query "DROP DATABASE IF EXISTS flywheel_demo"

echo "demo: starting flywheel dev (log: $LOG)"
FLYWHEEL_KAFKA_TOPIC_PREFIX="demo$(date +%s)." "$BIN" dev --config demo/flywheel.demo.yaml \
  --kafka 127.0.0.1:9092 --addr "$ADDR" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if curl -fsS "http://$ADDR/readyz" >/dev/null 2>&1; then break; fi
  kill -0 $PID 2>/dev/null || { tail -20 "$LOG"; echo "demo: flywheel dev exited" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://$ADDR/readyz" >/dev/null || { tail -20 "$LOG"; echo "demo: flywheel did not become ready in 60s" >&2; exit 1; }

echo "demo: simulating $EVENTS users at $RATE per second; version 1 is a uniformly random policy"
echo "demo: watch it turn on the dashboard: http://$ADDR/ui"
"$BIN" sim --url "http://$ADDR" --events "$EVENTS" --rate "$RATE" --json >"$ROOT/.services/demo-sim.json"

echo
echo "demo: what retraining decided"
grep -E 'retrain finished' "$LOG" | grep -v skipped | sed -E 's/.*model=([a-z]+) outcome=([a-z]+) reason="([^"]*)".*version=([0-9]+).*/  v\4 \2: \3/' || true
echo
echo "demo: what the canary judge decided"
grep -E 'deploy decision' "$LOG" | sed -E 's/.*action="?([a-z ]+)"? version=([0-9]+) reason="([^"]*)".*/  v\2 \1: \3/' || true
echo
echo "demo: reward rate by model version (the simulator's hidden truth decides each click)"
python3 - "$ROOT/.services/demo-sim.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {'policy':<24}{'decisions':>10}{'reward rate':>13}{'± s.e.':>9}")
for v in r["versions"]:
    print(f"  {'model v%d' % v['version']:<24}{v['decisions']:>10}{v['reward_rate']:>13.3f}{v['std_err']:>9.3f}")
print(f"  {'random (same contexts)':<24}{r['events']:>10}{r['random_reward_rate']:>13.3f}")
print(f"  {'oracle (same contexts)':<24}{r['events']:>10}{r['oracle_reward_rate']:>13.3f}")
if r.get("errors"):
    print(f"  {r['errors']} requests failed")
PY
echo
echo "demo: done in $((SECONDS - start))s"
