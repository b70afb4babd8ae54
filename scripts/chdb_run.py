#!/usr/bin/env python3
"""chdb_run.py: run SQL statements on ClickHouse 26.x in process (chDB).

Reads a JSON object from stdin: {"path": DIR, "statements": [{"name": N,
"sql": SQL, "query": bool, "settings": {NAME: VALUE}}...]} and runs the
statements in order in one chDB session whose data lives in DIR. Writes one
JSON object per statement to stdout: {"name": N, "ok": bool, "error": E,
"tsv": ROWS}, ROWS being the answer of a query in TabSeparated format.

The compatibility test of the clickhouse package drives it; there is no
current ClickHouse server on these machines, and chDB has no server mode.
"""
import json
import os
import sys

os.environ.setdefault("TZ", "UTC")

from chdb import session  # noqa: E402


def main():
    req = json.load(sys.stdin)
    sess = session.Session(req["path"])
    try:
        sess.query("SELECT 1")
        for st in req["statements"]:
            out = {"name": st["name"], "ok": True, "error": "", "tsv": ""}
            settings = st.get("settings") or {}
            try:
                for k, v in settings.items():
                    sess.query("SET %s = %s" % (k, v))
                res = sess.query(st["sql"], "TabSeparated")
                if st.get("query"):
                    out["tsv"] = res.bytes().decode("utf-8") if hasattr(res, "bytes") else str(res)
            except Exception as e:  # chDB raises on a server-side error
                out["ok"], out["error"] = False, str(e).strip()
            finally:
                for k in settings:
                    try:
                        sess.query("SET %s = DEFAULT" % k)
                    except Exception:
                        pass
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        sess.close()


if __name__ == "__main__":
    main()
