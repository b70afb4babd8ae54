#!/usr/bin/env bash
# bench.sh — Flywheel's benchmarks; results as JSON under bench/results/.
#
# learner: model/ against Vowpal Wabbit (PyPI's vowpalwabbit, --cb_explore_adf
# with the same interaction, bits and epsilon) in one run, on the simulator's
# data and on a supervised-to-bandit conversion of scikit-learn's bundled
# digits: examples per second and progressive reward.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

ONLY="${BENCH_ONLY:-}"   # learner | serve | ingest | retrain | queries | loop | empty for all

if [[ -z "$ONLY" || "$ONLY" == learner ]]; then
if ! python3 -c 'import vowpalwabbit, sklearn' 2>/dev/null; then
  echo "bench: installing vowpalwabbit and scikit-learn from PyPI" >&2
  python3 -m pip install --quiet 'vowpalwabbit==9.11.9' 'scikit-learn>=1.3' >&2
fi

go build -o "$WORK/learner" ./bench/learner
"$WORK/learner" -gen-sim 50000 -data "$WORK/sim.jsonl"
python3 bench/learner/digits.py --out "$WORK/digits.jsonl" --passes 5

{
  "$WORK/learner" -data "$WORK/sim.jsonl" -name sim -ctx-ns user -act-ns item
  "$WORK/learner" -data "$WORK/sim.jsonl" -name sim -ctx-ns user -act-ns item -decode-in-loop
  python3 bench/learner/vw.py --data "$WORK/sim.jsonl" --name sim --ctx-ns user --act-ns item
  "$WORK/learner" -data "$WORK/digits.jsonl" -name digits -ctx-ns x -act-ns a
  "$WORK/learner" -data "$WORK/digits.jsonl" -name digits -ctx-ns x -act-ns a -decode-in-loop
  python3 bench/learner/vw.py --data "$WORK/digits.jsonl" --name digits --ctx-ns x --act-ns a
} >"$WORK/learner.jsonl"

python3 - "$WORK/learner.jsonl" "$OUT/learner.json" <<'PY'
import json, sys, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
report = {"benchmark": "learner", "when": datetime.datetime.utcnow().isoformat() + "Z",
          "machine": platform.platform(), "results": rows, "comparison": []}
for data in sorted({r["data"] for r in rows}):
    ours = next(r for r in rows if r["data"] == data and r["learner"] == "flywheel" and "decoded" not in r["mode"])
    ours_dec = next(r for r in rows if r["data"] == data and r["learner"] == "flywheel" and "decoded" in r["mode"])
    vw_i = next(r for r in rows if r["data"] == data and r["learner"] == "vowpalwabbit" and "progressive_reward" in r)
    vw_c = next(r for r in rows if r["data"] == data and r["learner"] == "vowpalwabbit" and "progressive_reward" not in r)
    report["comparison"].append({
        "data": data, "examples": ours["examples"],
        "flywheel_examples_per_second": round(ours["examples_per_second"]),
        "vw_cpp_driver_examples_per_second": round(vw_c["examples_per_second"]),
        "vw_python_loop_examples_per_second": round(vw_i["examples_per_second"]),
        "speed_ratio_vs_vw_cpp": round(ours["examples_per_second"] / vw_c["examples_per_second"], 2),
        "flywheel_with_json_decoding_examples_per_second": round(ours_dec["examples_per_second"]),
        "speed_ratio_with_json_decoding_vs_vw_cpp": round(ours_dec["examples_per_second"] / vw_c["examples_per_second"], 2),
        "flywheel_progressive_reward": round(ours["progressive_reward"], 4),
        "vw_progressive_reward": round(vw_i["progressive_reward"], 4),
        "reward_ratio": round(ours["progressive_reward"] / vw_i["progressive_reward"], 3),
    })
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"{'data':<8}{'flywheel ex/s':>15}{'+JSON ex/s':>12}{'VW C++ ex/s':>13}{'ratio':>7}{'+JSON':>7}{'flywheel reward':>17}{'VW reward':>11}{'ratio':>7}")
for c in report["comparison"]:
    print(f"{c['data']:<8}{c['flywheel_examples_per_second']:>15}{c['flywheel_with_json_decoding_examples_per_second']:>12}{c['vw_cpp_driver_examples_per_second']:>13}"
          f"{c['speed_ratio_vs_vw_cpp']:>7}{c['speed_ratio_with_json_decoding_vs_vw_cpp']:>7}"
          f"{c['flywheel_progressive_reward']:>17}{c['vw_progressive_reward']:>11}{c['reward_ratio']:>7}")
PY
echo "bench: wrote $OUT/learner.json" >&2
fi

# serve: bench/serve -bench (method in bench/serve/bench.go): the servers
# pinned (taskset) to one CPU with Kafka and ClickHouse, the open-loop load
# generator (bench/loadgen, latency from each request's scheduled send time)
# and the driver on the other; the real /v1/rank handler (20 actions, about 30
# features, every decision spooled and shipped to Kafka) against a bare gin
# handler decoding the same JSON into the same types, in the same rounds:
# closed-loop peak, fixed offered rates, and at half of peak interleaved
# pairs of short slices, bare vs flywheel and steady vs a model swapped in
# every second; and, in the same rounds on the same servers, a 3-slot page
# of the same 20 actions (bench/serve/page.lua): its peak, then bare and
# flywheel, single-slot and page, at half of the flywheel page peak in groups
# of short slices; server CPU time per request from /proc/PID/stat and the
# ratios. BENCH_SERVE_ROUNDS (3), _SECONDS (8 measured per run), _WARMUP (2),
# _FRACTIONS of peak (0.25,0.5,0.75), _PAIRS per round at half of peak (2);
# about 9 minutes.
if [[ -z "$ONLY" || "$ONLY" == serve ]]; then
go build -o "$WORK/serve" ./bench/serve
go build -o "$WORK/loadgen" ./bench/loadgen
"$WORK/serve" -bench -loadgen "$WORK/loadgen" -kafka "${FLYWHEEL_TEST_KAFKA:-127.0.0.1:9092}" \
  -rounds "${BENCH_SERVE_ROUNDS:-3}" -seconds "${BENCH_SERVE_SECONDS:-8}" -warmup "${BENCH_SERVE_WARMUP:-2}" \
  -fractions "${BENCH_SERVE_FRACTIONS:-0.25,0.5,0.75}" -pairs "${BENCH_SERVE_PAIRS:-2}" -out "$OUT/serve.json"
fi

# ingest: Flywheel's ingest against kcat | clickhouse-client (JSONEachRow), the
# same records from the same topics, decisions and feedback separately; and
# against clickhouse-client inserting, from a JSONEachRow file, the very rows
# (the columns ingest inserts) Flywheel wrote in that run, into a database
# migrated as Flywheel's (its insert feeds the same materialized views), and
# into a bare table made AS Flywheel's: rows/s, bytes/s and CPU a row of the
# same work.
if [[ -z "$ONLY" || "$ONLY" == ingest ]]; then
if ! command -v kcat >/dev/null; then
  echo "bench: installing kcat from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }
fi
# The server's CPU time is read from /proc when it runs here: the one
# services.sh runs (its pid file), or else the clickhouse-server ss shows
# listening on the address's port.
CH_PID=0
CH_ADDR="${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}"
if [[ "$CH_ADDR" == 127.0.0.1:9000 && -f .services/clickhouse/clickhouse.pid ]] && kill -0 "$(cat .services/clickhouse/clickhouse.pid)" 2>/dev/null; then
  CH_PID="$(cat .services/clickhouse/clickhouse.pid)"
elif [[ "$CH_ADDR" == 127.0.0.1:* ]]; then
  pid="$(ss -Hltnp "sport = :${CH_ADDR#127.0.0.1:}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)"
  if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == clickhouse* ]]; then CH_PID="$pid"; fi
fi
echo "bench: ClickHouse server pid for its CPU time: $CH_PID (0: not read)" >&2
go run ./bench/ingest -kafka "${FLYWHEEL_TEST_KAFKA:-127.0.0.1:9092}" -clickhouse "${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}" \
  -clickhouse-pid "$CH_PID" -decisions "${BENCH_INGEST_DECISIONS:-20000}" -feedback "${BENCH_INGEST_FEEDBACK:-100000}" >"$WORK/ingest.jsonl"
python3 - "$WORK/ingest.jsonl" "$OUT/ingest.json" <<'PY'
import json, sys, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump({"benchmark": "ingest", "when": datetime.datetime.utcnow().isoformat() + "Z", "machine": platform.platform(),
           "reference": "kcat -C -e | clickhouse-client INSERT ... FORMAT JSONEachRow into a table of the records' scalar fields only "
                        "(nested ones skipped: ~100-byte rows, not the rows Flywheel writes); reference_* fields",
           "same_rows_reference": "after each Flywheel run, SELECT <the columns ingest inserts> FROM db.decisions (or db.feedback) FORMAT JSONEachRow "
                                  "to a file (untimed), a database refdb migrated as Flywheel's (so that the insert feeds the same materialized views, "
                                  "the time-ordered companion tables), then timed: clickhouse-client --query "
                                  "'INSERT INTO refdb.t (<columns>) FORMAT JSONEachRow' < file; same_rows_* fields (same_rows_bare_*: the same into a "
                                  "bare table made AS db.t, no views); its bytes are the file's, "
                                  "and flywheel_jsoneachrow_bytes_per_second is that file's size over Flywheel's time (flywheel_kafka_bytes_per_second: "
                                  "the Kafka records Flywheel read); CPU is clickhouse-client's + the server's (merges included); "
                                  "same_rows_ratio and same_rows_cpu_ratio are flywheel/reference. Flywheel's decisions runs also write the "
                                  "actions table (20 rows), which the reference does not; the reference reads a local file (no Kafka fetch, no group join: "
                                  "set it beside flywheel_per_second_after_first_batch too)",
           "results": rows}, open(sys.argv[2], "w"), indent=2)
print(f"medians of {rows[0]['runs']} alternating runs; decisions have 20 actions of 4 or 30 features each")
print(f"{'kind':<14}{'records':>9}{'MiB':>7}{'flywheel/s':>12}{'steady/s':>10}{'reference/s':>13}{'ratio':>7}  runs (flywheel / reference)")
for r in rows:
    runs = " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(r['flywheel_per_second_runs'], r['reference_per_second_runs']))
    kind = r['kind'] + (f" ({r['features_per_action']})" if 'features_per_action' in r else "")
    print(f"{kind:<14}{r['records']:>9}{r['mib']:>7.0f}{r['flywheel_per_second']:>12.0f}{r['flywheel_per_second_after_first_batch']:>10.0f}{r['reference_per_second']:>13.0f}{r['ratio']:>7.2f}  {runs}")
print("CPU µs a record (medians): the pipeline's processes + the ClickHouse server's, merges included")
for r in rows:
    kind = r['kind'] + (f" ({r['features_per_action']})" if 'features_per_action' in r else "")
    srv = lambda k: f" + {r[k]:.1f}" if k in r else ""
    print(f"{kind:<14} flywheel {r['flywheel_cpu_us_per_record']:.1f}{srv('flywheel_server_cpu_us_per_record')}   reference {r['reference_cpu_us_per_record']:.1f}{srv('reference_server_cpu_us_per_record')}")
print("same rows: clickhouse-client INSERT ... FORMAT JSONEachRow < the rows Flywheel wrote (its columns), into a table AS Flywheel's")
print("  MB/s: flywheel's Kafka bytes / the same JSONEachRow bytes; reference's JSONEachRow bytes. CPU µs a row: process + server")
print(f"{'kind':<14}{'rows':>8}{'B/row':>7}{'kafkaB/rec':>11}{'flywheel/s':>12}{'reference/s':>13}{'ratio':>7}{'flywheel MB/s':>16}{'ref MB/s':>10}{'flywheel CPU':>14}{'ref CPU':>12}{'CPU ratio':>10}  runs (flywheel / reference)")
for r in rows:
    kind = r['kind'] + (f" ({r['features_per_action']})" if 'features_per_action' in r else "")
    runs = " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(r['flywheel_per_second_runs'], r['same_rows_per_second_runs']))
    srv = lambda k: f"+{r[k]:.1f}" if k in r else ""
    fcpu = f"{r['flywheel_cpu_us_per_record']:.1f}{srv('flywheel_server_cpu_us_per_record')}"
    rcpu = f"{r['same_rows_cpu_us_per_row']:.1f}{srv('same_rows_server_cpu_us_per_row')}"
    fmb = f"{r['flywheel_kafka_bytes_per_second']/1e6:.1f}/{r['flywheel_jsoneachrow_bytes_per_second']/1e6:.1f}"
    print(f"{kind:<14}{r['same_rows_rows']:>8.0f}{r['same_rows_bytes_per_row']:>7.0f}{r['kafka_bytes_per_record']:>11.0f}{r['flywheel_per_second']:>12.0f}{r['same_rows_per_second']:>13.0f}{r['same_rows_ratio']:>7.2f}"
          f"{fmb:>16}{r['same_rows_bytes_per_second']/1e6:>10.1f}{fcpu:>14}{rcpu:>12}{r['same_rows_cpu_ratio']:>10.2f}  {runs}")
PY
echo "bench: wrote $OUT/ingest.json" >&2
fi

# retrain: a whole retrain run (streamed training set, training, off-policy
# evaluation, registration) on N logged decisions of 20 actions generated in
# ClickHouse, for 1 and 5 million; once more on 1 million whose action sets
# all differ (no decoded-action reuse).
if [[ -z "$ONLY" || "$ONLY" == retrain ]]; then
go build -o "$WORK/retrain" ./bench/retrain
{
  "$WORK/retrain" -clickhouse "${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}" -sizes "${BENCH_RETRAIN_SIZES:-1000000,5000000}"
  "$WORK/retrain" -clickhouse "${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}" -sizes "${BENCH_RETRAIN_UNIQUE_SIZES:-1000000}" -unique-actions
} >"$WORK/retrain.jsonl" 2>"$WORK/retrain.log" || { cat "$WORK/retrain.log" >&2; exit 1; }
python3 - "$WORK/retrain.jsonl" "$OUT/retrain.json" <<'PY'
import json, sys, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
fixed = sorted([r for r in rows if not r["unique_action_sets"]], key=lambda r: r["decisions"])
report = {"benchmark": "retrain", "when": datetime.datetime.utcnow().isoformat() + "Z", "machine": platform.platform(),
          "goal": "1 million decisions retrained and evaluated in under 60 s; time linear in the rows; peak memory flat",
          "results": rows}
if len(fixed) >= 2:
    a, b = fixed[0], fixed[-1]
    report["seconds_per_million_ratio_largest_vs_smallest"] = round((b["retrain_seconds"] / b["decisions"]) / (a["retrain_seconds"] / a["decisions"]), 3)
    report["peak_rss_ratio_largest_vs_smallest"] = round(b["peak_rss_bytes"] / a["peak_rss_bytes"], 3)
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"{'decisions':>10}{'unique sets':>12}{'seconds':>9}{'per second':>12}{'peak heap MiB':>14}{'peak RSS MiB':>13}  outcome")
for r in rows:
    print(f"{r['decisions']:>10}{str(r['unique_action_sets']):>12}{r['retrain_seconds']:>9.1f}{r['decisions_per_second']:>12.0f}"
          f"{r['peak_heap_bytes']/2**20:>14.0f}{r['peak_rss_bytes']/2**20:>13.0f}  {r['outcome']}")
for k in ("seconds_per_million_ratio_largest_vs_smallest", "peak_rss_ratio_largest_vs_smallest"):
    if k in report:
        print(f"{k}: {report[k]}")
PY
echo "bench: wrote $OUT/retrain.json" >&2
fi

# queries: the canary judge's check (30 minutes of closed examples) and a
# dashboard refresh (an hour) on databases of 100 thousand and 10 million
# decisions at the same traffic (59,524 an hour: 10M is 7 days of it, 100k
# the last 1.7 hours), once the merges have settled and after OPTIMIZE
# FINAL; the goal is a 10M time at most 2x the 100k one.
if [[ -z "$ONLY" || "$ONLY" == queries ]]; then
go build -o "$WORK/queries" ./bench/queries
"$WORK/queries" -clickhouse "${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}" -sizes "${BENCH_QUERIES_SIZES:-100000,10000000}" \
  -per-hour "${BENCH_QUERIES_PER_HOUR:-59524}" >"$WORK/queries.jsonl"
python3 - "$WORK/queries.jsonl" "$OUT/queries.json" <<'PY'
import json, sys, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
report = {"benchmark": "queries", "when": datetime.datetime.utcnow().isoformat() + "Z", "machine": platform.platform(),
          "goal": "the judge's check and a dashboard refresh at 10M decisions at most 2x their time at 100k", "results": rows, "ratios": []}
for state in ("merged", "optimized"):
    rs = sorted([r for r in rows if r["state"] == state], key=lambda r: r["decisions"])
    if len(rs) >= 2:
        a, b = rs[0], rs[-1]
        report["ratios"].append({"state": state, "sizes": [a["decisions"], b["decisions"]],
            "judge": round(b["judge_check_seconds"] / a["judge_check_seconds"], 2),
            "dashboard": round(b["dashboard_refresh_seconds"] / a["dashboard_refresh_seconds"], 2)})
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"{'decisions':>10} {'state':<10}{'parts':>6}{'judge s':>9}{'dashboard s':>12}{'closed in 1h':>13}")
for r in rows:
    print(f"{r['decisions']:>10} {r['state']:<10}{r['decision_parts']:>6}{r['judge_check_seconds']:>9.3f}{r['dashboard_refresh_seconds']:>12.3f}{r['dashboard_closed_decisions']:>13}")
for x in report["ratios"]:
    print(f"{x['state']}: {x['sizes'][1]} vs {x['sizes'][0]}: judge {x['judge']}x, dashboard {x['dashboard']}x")
PY
echo "bench: wrote $OUT/queries.json" >&2
fi

# loop: each simulated world through the real loop, `flywheel dev --kafka`
# (serve, Kafka, ingest, ClickHouse, retrain in one process; a ClickHouse
# database and a topic prefix of each run's own) with the documented defaults
# except the retrain schedule and the reward window, driven by the simulator
# at a steady rate: expected reward per window of decisions against random
# and oracle on the same contexts, the versions promoted (each valued exactly
# on fresh draws, so a worse one shows), and Vowpal Wabbit --cb_explore_adf
# --squarecb -q learning online on a stream of the same world.
# BENCH_LOOP_EVENTS (40000), _RATE (decisions/s, 200), _WINDOW (10000),
# _SCHEDULE (@every 20s), _REWARD_WINDOW (5s), _WORLDS ("homepage shop");
# BENCH_LOOP_FLYWHEEL names a flywheel binary to use instead of building one;
# BENCH_LOOP_LOGS a directory that keeps each world's `flywheel dev` output.
if [[ -z "$ONLY" || "$ONLY" == loop ]]; then
if ! python3 -c 'import vowpalwabbit' 2>/dev/null; then
  echo "bench: installing vowpalwabbit from PyPI" >&2
  python3 -m pip install --quiet 'vowpalwabbit==9.11.9' >&2
fi
FLYWHEEL_BIN="${BENCH_LOOP_FLYWHEEL:-}"
if [[ -z "$FLYWHEEL_BIN" ]]; then
  go build -o "$WORK/flywheel" ./cmd/flywheel
  FLYWHEEL_BIN="$WORK/flywheel"
fi
go build -o "$WORK/loop" ./bench/loop
go build -o "$WORK/learner" ./bench/learner
LOOP_EVENTS="${BENCH_LOOP_EVENTS:-40000}"
LOOP_WINDOW="${BENCH_LOOP_WINDOW:-10000}"
LOOP_LOGS="${BENCH_LOOP_LOGS:-$WORK}"
mkdir -p "$LOOP_LOGS"
: >"$WORK/loop.jsonl"
: >"$WORK/loop-vw.jsonl"
: >"$WORK/loop-vw-ref.jsonl"
for world in ${BENCH_LOOP_WORLDS:-homepage shop}; do
  echo "bench: loop, world $world: $LOOP_EVENTS decisions at ${BENCH_LOOP_RATE:-200}/s" >&2
  "$WORK/loop" -flywheel "$FLYWHEEL_BIN" -kafka "${FLYWHEEL_TEST_KAFKA:-127.0.0.1:9092}" -clickhouse "${FLYWHEEL_TEST_CLICKHOUSE:-127.0.0.1:9000}" \
    -world "$world" -events "$LOOP_EVENTS" -rate "${BENCH_LOOP_RATE:-200}" -window "$LOOP_WINDOW" \
    -schedule "${BENCH_LOOP_SCHEDULE:-@every 20s}" -reward-window "${BENCH_LOOP_REWARD_WINDOW:-5s}" \
    -log "$LOOP_LOGS/loop-$world.log" >>"$WORK/loop.jsonl" || { tail -n 40 "$LOOP_LOGS/loop-$world.log" >&2; exit 1; }
  "$WORK/learner" -gen-sim "$LOOP_EVENTS" -world "$world" -data "$WORK/stream-$world.jsonl"
  python3 bench/learner/vw.py --data "$WORK/stream-$world.jsonl" --name "$world" --squarecb --window "$LOOP_WINDOW" --online-only >>"$WORK/loop-vw.jsonl"
  python3 - "$WORK/stream-$world.jsonl" "$LOOP_WINDOW" "$world" >>"$WORK/loop-vw-ref.jsonl" <<'PY'
import json, sys
# the random and oracle rewards of VW's stream, per window
rows = [json.loads(l) for l in open(sys.argv[1])]
n, out = int(sys.argv[2]), []
for s in range(0, len(rows), n):
    w = rows[s:s + n]
    out.append({"start": s, "end": s + len(w), "random": sum(sum(r["truth"]) / len(r["truth"]) for r in w) / len(w),
                "oracle": sum(max(r["truth"]) for r in w) / len(w)})
print(json.dumps({"data": sys.argv[3], "windows": out}))
PY
done

python3 - "$WORK/loop.jsonl" "$WORK/loop-vw.jsonl" "$WORK/loop-vw-ref.jsonl" "$OUT/loop.json" <<'PY'
import json, sys, platform, datetime
loops = [json.loads(l) for l in open(sys.argv[1])]
vws = {r["data"]: r for r in map(json.loads, open(sys.argv[2]))}
refs = {r["data"]: r for r in map(json.loads, open(sys.argv[3]))}
report = {"benchmark": "loop", "when": datetime.datetime.utcnow().isoformat() + "Z", "machine": platform.platform(),
          "setup": "flywheel dev --kafka (real Kafka and ClickHouse), documented model defaults except retrain.schedule and reward.window; "
                   "the simulator at a steady rate, 4 users; flywheel reward = the served policy's exact expected reward "
                   "(sum of the answered probabilities times the truth), averaged over the window's decisions; VW: "
                   "--cb_explore_adf --squarecb learning online on a generated stream of the same world, expected reward likewise",
          "goals": "decisions 30,000-40,000 at >= 90% of the oracle on both worlds and >= VW's; 0 promotions of a worse candidate",
          "worlds": []}
for lp in loops:
    w, sim = lp["world"], lp["sim"]
    vw, ref = vws[w], refs[w]
    seen, rows = {1}, []
    for k, win in enumerate(sim["windows"]):
        vers = sorted(int(v) for v in win["versions"])
        new = [v for v in vers if v not in seen]
        seen.update(vers)
        vw_w = vw["windows"][k] if k < len(vw["windows"]) else None
        rows.append({"start": win["start"], "end": win["end"], "decisions": win["decisions"],
                     "flywheel_expected_reward": round(win["expected_reward"], 4),
                     "flywheel_reward_rate": round(win["reward_rate"], 4),
                     "random": round(win["random_reward_rate"], 4), "oracle": round(win["oracle_reward_rate"], 4),
                     "share_of_oracle": round(win["expected_reward"] / win["oracle_reward_rate"], 3),
                     "vw_expected_reward": vw_w and round(vw_w["expected_reward"], 4),
                     "vw_reward_rate": vw_w and round(vw_w["reward_rate"], 4),
                     "vw_share_of_oracle": vw_w and round(vw_w["expected_reward"] / ref["windows"][k]["oracle"], 3),
                     "versions_served": vers, "versions_first_served": new})
    last = rows[-1]
    report["worlds"].append({
        "world": w, "events": lp["events"], "rate": lp["rate"], "seconds": round(lp["seconds"], 1), "errors": sim["errors"],
        "config": lp["config"], "windows": rows, "versions": sim["versions"], "version_values": lp["versions"],
        "retrain_runs": lp["retrain_runs"], "not_promoted": lp.get("not_promoted") or [], "promotions": lp["promotions"] or [],
        "promotions_count": len(lp["promotions"] or []), "worse_promotions": lp["worse_promotions"],
        "worse_beyond_margin_promotions": lp["worse_beyond_margin_promotions"], "margin": lp["margin"],
        "vw_args": vw["args"], "vw_progressive_reward": round(vw["progressive_reward"], 4),
        "goal_last_window_90pct_of_oracle": last["share_of_oracle"] >= 0.9,
        "goal_last_window_at_least_vw": last["vw_expected_reward"] is not None and last["flywheel_expected_reward"] >= last["vw_expected_reward"],
        "goal_no_worse_promotion": lp["worse_promotions"] == 0,
    })
json.dump(report, open(sys.argv[4], "w"), indent=2)
print(f"{'world':<9}{'window':>13}{'flywheel':>10}{'of oracle':>11}{'VW':>8}{'VW of or.':>11}{'random':>8}{'oracle':>8}  versions (new)")
for wr in report["worlds"]:
    for r in wr["windows"]:
        vw = "-" if r["vw_expected_reward"] is None else f"{r['vw_expected_reward']:.3f}"
        vws_ = "-" if r["vw_share_of_oracle"] is None else f"{r['vw_share_of_oracle']:.0%}"
        print(f"{wr['world']:<9}{r['start']:>6}-{r['end']:<6}{r['flywheel_expected_reward']:>10.3f}{r['share_of_oracle']:>11.0%}{vw:>8}{vws_:>11}"
              f"{r['random']:>8.3f}{r['oracle']:>8.3f}  {r['versions_served']} ({r['versions_first_served']})")
    print(f"{wr['world']}: {wr['promotions_count']} promotions, {wr['worse_promotions']} to a worse version "
          f"({wr['worse_beyond_margin_promotions']} worse beyond the {wr['margin']:.0%} margin); retrain runs {wr['retrain_runs']}")
    for p in wr["promotions"]:
        print(f"  v{p['from']} -> v{p['to']}: value {p['from_value']:.4f} -> {p['to_value']:.4f} ({p['diff']:+.4f} ± {p['diff_std_err']:.4f})")
PY
echo "bench: wrote $OUT/loop.json" >&2
fi
