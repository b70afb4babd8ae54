"""The Vowpal Wabbit side of the learner benchmark: the same data file, the
same protocol as main.go (probabilities from the policy, the action drawn with
the row's own uniform number, only its reward revealed, learn), through
vowpalwabbit's Python binding with --cb_explore_adf, the same interaction,
bits and epsilon. It also times VW's own C++ driver learning the file as
logged by that run (-d), which has no Python in the loop."""
import argparse, json, os, re, tempfile, time
import vowpalwabbit

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--bits", type=int, default=18)
ap.add_argument("--epsilon", type=float, default=0.05)
ap.add_argument("--ctx-ns", default="user")
ap.add_argument("--act-ns", default="item")
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
        rows.append((shared, acts, r["rewards"], r["u"]))

args = f"--cb_explore_adf -q {a.ctx_ns[0]}{a.act_ns[0]} --epsilon {a.epsilon} -b {a.bits} --quiet"
ws = vowpalwabbit.Workspace(args)
logged = []
total = 0.0
start = time.perf_counter()
for shared, acts, rewards, u in rows:
    pmf = ws.predict([shared] + acts)
    acc, choice = 0.0, len(pmf) - 1
    for i, p in enumerate(pmf):
        acc += p
        if u < acc:
            choice = i
            break
    r = rewards[choice]
    total += r
    labelled = [shared] + [(f"0:{-r}:{pmf[i]} " if i == choice else "") + x for i, x in enumerate(acts)]
    ws.learn(labelled)
    logged.append(labelled)
secs = time.perf_counter() - start
ws.finish()
n = len(rows)
print(json.dumps({"learner": "vowpalwabbit", "data": a.name, "examples": n, "seconds": secs,
                  "examples_per_second": n / secs, "progressive_reward": total / n,
                  "mode": "interactive, through the Python binding", "args": args}))

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
