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
