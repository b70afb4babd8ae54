"""The Vowpal Wabbit side of the learner benchmark: the same data file, the
same protocol as main.go (probabilities from the policy, the action drawn with
the row's own uniform number, only its reward revealed, learn), through
vowpalwabbit's Python binding with --cb_explore_adf, the same interaction,
bits and epsilon. It also times VW's own C++ driver learning the file as
logged by that run (-d), which has no Python in the loop.

With --squarecb it explores with SquareCB (VW's default gamma_scale 10 and
gamma_exponent 0.5) instead of epsilon-greedy; with --window N it also
reports the reward of each window of N examples, realized and, when the rows
carry the simulator's truth, expected (the chosen pmf's expected reward);
--online-only skips the C++ driver's timing (the loop benchmark)."""
import argparse, json, os, re, tempfile, time
import vowpalwabbit

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--bits", type=int, default=18)
ap.add_argument("--epsilon", type=float, default=0.05)
ap.add_argument("--ctx-ns", default="user")
ap.add_argument("--act-ns", default="item")
ap.add_argument("--squarecb", action="store_true")
ap.add_argument("--window", type=int, default=0)
ap.add_argument("--online-only", action="store_true")
a = ap.parse_args()

bad = re.compile(r"[\s:|]")

def feats(ns):
    out = []
    for name, v in sorted(ns.items()):
        name = bad.sub("_", name)
        if isinstance(v, bool):
            if v:
                out.append(name)
        elif isinstance(v, (int, float)):
            out.append(f"{name}:{v}")
        elif isinstance(v, list):
            out += [f"{name}={bad.sub('_', s)}" for s in v]
        else:
            out.append(f"{name}={bad.sub('_', v)}")
    return " ".join(out)

def line(f):
    return " ".join(f"|{ns} {feats(v)}" for ns, v in sorted((f or {}).items())) or "|"

rows = []
with open(a.data) as fh:
    for l in fh:
        r = json.loads(l)
        shared = "shared " + line(r["context"])
        acts = [line(x.get("features")) for x in r["actions"]]
        rows.append((shared, acts, r["rewards"], r["u"], r.get("truth")))

explore = "--squarecb" if a.squarecb else f"--epsilon {a.epsilon}"
args = f"--cb_explore_adf {explore} -q {a.ctx_ns[0]}{a.act_ns[0]} -b {a.bits} --quiet"
ws = vowpalwabbit.Workspace(args)
logged = []
total = 0.0
windows, wr, we, wn = [], 0.0, 0.0, 0
start = time.perf_counter()
for k, (shared, acts, rewards, u, truth) in enumerate(rows):
    pmf = ws.predict([shared] + acts)
    acc, choice = 0.0, len(pmf) - 1
    for i, p in enumerate(pmf):
        acc += p
        if u < acc:
            choice = i
            break
    r = rewards[choice]
    total += r
    if a.window:
        wr += r
        we += sum(p * t for p, t in zip(pmf, truth)) if truth else r
        wn += 1
        if wn == a.window or k == len(rows) - 1:
            windows.append({"start": k + 1 - wn, "end": k + 1, "reward_rate": wr / wn, "expected_reward": we / wn})
            wr, we, wn = 0.0, 0.0, 0
    labelled = [shared] + [(f"0:{-r}:{pmf[i]} " if i == choice else "") + x for i, x in enumerate(acts)]
    ws.learn(labelled)
    logged.append(labelled)
secs = time.perf_counter() - start
ws.finish()
n = len(rows)
out = {"learner": "vowpalwabbit", "data": a.name, "examples": n, "seconds": secs,
       "examples_per_second": n / secs, "progressive_reward": total / n,
       "mode": "interactive, through the Python binding", "args": args}
if a.window:
    out["windows"] = windows
print(json.dumps(out))
if a.online_only:
    raise SystemExit(0)

# VW's C++ driver on the same examples as this run logged them.
fd, path = tempfile.mkstemp(suffix=".vw")
with os.fdopen(fd, "w") as fh:
    for ex in logged:
        fh.write("\n".join(ex) + "\n\n")
t0 = time.perf_counter()
ws = vowpalwabbit.Workspace(args)
ws.finish()
empty = time.perf_counter() - t0
t0 = time.perf_counter()
ws = vowpalwabbit.Workspace(args + f" -d {path}")
ws.finish()
secs = time.perf_counter() - t0 - empty
os.unlink(path)
print(json.dumps({"learner": "vowpalwabbit", "data": a.name, "examples": n, "seconds": secs,
                  "examples_per_second": n / secs, "mode": "learning the logged file with its C++ driver (-d)", "args": args + " -d FILE"}))
