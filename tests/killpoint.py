"""Run a module as `python -m` would, but SIGKILL the process right after the n-th call of one
function returns: a crash at an exact, repeatable point, whatever the speed of the machine.

    python -m tests.killpoint <module>:<function> <n> <module to run> [args...]
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys


def arm(target: str, n: int) -> None:
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, func_name)
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, func_name, wrapped)


if __name__ == "__main__":
    target, n, run_module, *rest = sys.argv[1:]
    arm(target, int(n))
    sys.argv = [run_module, *rest]
    runpy.run_module(run_module, run_name="__main__", alter_sys=True)
