"""Test double for a warm group's ``accelerate launch``: N plain processes that speak the protocol.

``python fake_warm_group.py N`` starts N ranks (this file with ``--rank R``), as
a launcher would, and exits with the first failing rank's code. Each rank says
hello to its worker (``WBSWEEP_WARM_ADDRESS``), then answers each trial at once
with ``exit_code`` 0 unless the trial's params say otherwise:

* ``{"fail": R}``: rank R reports a failure ("rank R refuses");
* ``{"hang": R}``: rank R never answers (a rank stuck in a collective);
* ``{"die": R}``: rank R exits at once with code 7, without a word.

Used where the real 2-rank group (``tests/e2e/test_warm.py``) would take a minute
to show what the worker does with a group whose ranks misbehave.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from multiprocessing.connection import Client


def rank_main(rank: int) -> int:
    conn = Client(os.environ["WBSWEEP_WARM_ADDRESS"],
                  authkey=bytes.fromhex(os.environ["WBSWEEP_WARM_AUTHKEY"]))  # fmt: skip
    conn.send(("hello", {"rank": rank, "pid": os.getpid()}))
    while True:
        kind, body = conn.recv()
        if kind == "exit":
            return 0
        if kind != "trial":
            continue
        params = body["params"]
        if params.get("die") == rank:
            os._exit(7)
        if params.get("hang") == rank:
            time.sleep(3600)
        if params.get("fail") == rank:
            conn.send(("end", {"exit_code": 1, "reason": f"rank {rank} refuses"}))
        else:
            conn.send(("end", {"exit_code": 0}))
        conn.send(("memory", {"allocated": None}))


def main() -> int:
    if sys.argv[1] == "--rank":
        return rank_main(int(sys.argv[2]))
    ranks = [
        subprocess.Popen([sys.executable, __file__, "--rank", str(r)])
        for r in range(int(sys.argv[1]))
    ]
    while True:
        codes = [p.poll() for p in ranks]
        failed = [c for c in codes if c]
        if failed:
            for p in ranks:
                p.kill()
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
