"""Writes the supervised-to-bandit conversion of scikit-learn's bundled
handwritten digits (1,797 images, 64 pixels, 10 classes): the context is the
pixels, the actions are the ten classes, the reward is 1 for the true class.
The set is shuffled and repeated `--passes` times, as a stream."""
import argparse, json, random
from sklearn.datasets import load_digits

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--passes", type=int, default=5)
a = ap.parse_args()
d = load_digits()
rng = random.Random(7)
idx = list(range(len(d.target)))
with open(a.out, "w") as f:
    for _ in range(a.passes):
        rng.shuffle(idx)
        for i in idx:
            ctx = {"x": {f"p{j}": float(v) / 16 for j, v in enumerate(d.data[i]) if v}}
            actions = [{"id": str(k), "features": {"a": {"class": str(k)}}} for k in range(10)]
            rewards = [1.0 if k == d.target[i] else 0.0 for k in range(10)]
            f.write(json.dumps({"context": ctx, "actions": actions, "rewards": rewards, "u": rng.random()}) + "\n")
