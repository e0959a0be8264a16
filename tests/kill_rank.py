"""tests.killpoint for one rank of a launched job: `python -m tests.kill_rank <rank> <module>:<function> <n>
<module to run> [args...]` runs the module in every process, and SIGKILLs only the process whose RANK is
<rank>, right after the n-th call of the function returns."""

from __future__ import annotations

import os
import runpy
import sys

from tests.killpoint import arm

if __name__ == "__main__":
    rank, target, n, run_module, *rest = sys.argv[1:]
    if os.environ.get("RANK") == rank:
        arm(target, int(n))
    sys.argv = [run_module, *rest]
    runpy.run_module(run_module, run_name="__main__", alter_sys=True)
