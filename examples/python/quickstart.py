#!/usr/bin/env python3
"""Flywheel from Python, standard library only: rank, then send the feedback.

    python3 examples/python/quickstart.py [BASE_URL] [APP_KEY]

Prints the decision and the feedback's answer as JSON lines. A retry of a
rank request with the same event_id is answered with the same decision, and
a retry of a feedback with the same feedback_id counts once, so both are
safe to repeat: this script chooses both ids itself and retries on
connection errors, 429 and 5xx.
"""
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
KEY = sys.argv[2] if len(sys.argv) > 2 else ""


def call(path, body, attempts=4):
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if KEY:
        headers["Authorization"] = "Bearer " + KEY
    wait = 0.05
    for attempt in range(attempts):
        req = urllib.request.Request(BASE + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code not in (429, 502, 503, 504) or attempt == attempts - 1:
                raise SystemExit(f"{path}: {e.code} {e.read().decode()}")
        except urllib.error.URLError as e:
            if attempt == attempts - 1:
                raise SystemExit(f"{path}: {e.reason}")
        time.sleep(wait)
        wait *= 2


event_id = uuid.uuid4().hex
decision = call("/v1/rank", {
    "model": "homepage",
    "event_id": event_id,
    "context": {"user": {"segment": "gamers", "age": 31}},
    "actions": [
        {"id": "a1", "features": {"item": {"category": "games", "price": 49.9}}},
        {"id": "a2", "features": {"item": {"category": "books", "price": 12}}},
    ],
})
print(json.dumps({"decision": decision}))
answer = call("/v1/feedback", {"event_id": decision["event_id"], "feedback_id": "click-" + event_id, "reward": 1, "type": "click"})
print(json.dumps({"feedback": answer}))
