"""Tallies for the reliability figures (faults tried / survived, bad inputs tried / clean errors,
log rows lost). Tests call `record`; with RELIABILITY_TALLY=/path/file.jsonl set, each record is
appended there as one JSON line; add them up with

  python -c "import json,sys,collections as c; t=c.defaultdict(lambda:[0,0,0])
  for l in open(sys.argv[1]): r=json.loads(l); x=t[r['kind']]; x[0]+=r['tried']; x[1]+=r['ok']; x[2]+=r['rows_lost']
  print(dict(t))" FILE

Without the variable nothing is written."""

from __future__ import annotations

import json
import os


def record(kind: str, name: str, tried: int, ok: int, rows_lost: int = 0) -> None:
    """kind: "fault" (ok = survived: resumed with every row) or "bad_input" (ok = clean error/exit)."""
    path = os.environ.get("RELIABILITY_TALLY")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "name": name, "tried": tried, "ok": ok, "rows_lost": rows_lost}) + "\n")
