"""Test harness for model-written code: this file's source is what the sandbox runs.

Standard library only; it must run under whatever interpreter the sandbox uses. The reward process
sends this source as the program and a JSON spec on stdin:
``{"code", "inputs", "fn_name", "timeout_s", "total_s", "memory_mb", "max_output_bytes"}``.
**Expected outputs never enter the sandbox**: the harness runs every test in a fresh child
interpreter, reduces what the child produced to a canonical form and prints only a digest of it,
one JSON line after :data:`MARKER`. The reward process compares those digests with digests of the
expected outputs computed by the same functions (:func:`stdout_digest`, :func:`value_digest`), so
a solution cannot read the answer key from the harness, its files or its memory.

Each test runs with its own wall-clock limit (the child's process group is killed), CPU, memory and
output-size limits; once ``total_s`` is spent the remaining tests are reported as ``skipped``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal, InvalidOperation

MARKER = "@@verl_sod_harness@@"
_PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, functools, heapq, itertools, math, operator, random, re, string, sys\n"
    "from collections import Counter, OrderedDict, defaultdict, deque\n"
    "from functools import cache, lru_cache, reduce\n"
    "from heapq import heapify, heappop, heappush\n"
    "from bisect import bisect_left, bisect_right, insort\n"
    "from itertools import accumulate, combinations, permutations, product\n"
    "from math import ceil, comb, floor, gcd, inf, isqrt, sqrt\n"
)
# Runs one functional test: loads the solution as a module, calls the function with the
# JSON-decoded input lines as arguments, writes the JSON-encoded return value to a file.
_RUNNER = """
import io, json, sys
src_path, fn_name, input_path, result_path = sys.argv[1:5]
namespace = {"__name__": "solution"}
exec(compile(open(src_path).read(), "solution.py", "exec"), namespace)
with open(input_path) as f:
    args = [json.loads(line) for line in f.read().split("\\n") if line.strip()]
holder = namespace.get("Solution")
target = getattr(holder(), fn_name) if holder is not None else namespace[fn_name]
sys.stdout = io.StringIO()
result = target(*args)
sys.stdout = sys.__stdout__
def fallback(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)
with open(result_path, "w") as f:
    f.write(json.dumps(result, default=fallback))
"""


def _token(token: str) -> str:
    try:
        number = Decimal(token)
    except InvalidOperation:
        return token
    if not number.is_finite():
        return token
    return "0" if number == 0 else str(number.normalize())


def canonical_stdout(text: str) -> str:
    """Stripped lines, whitespace-split tokens, numbers compared by Decimal value."""
    lines = [line.split() for line in text.strip().splitlines()]
    return "\n".join(" ".join(_token(tok) for tok in tokens) for tokens in lines)


def _normal_value(value: object) -> object:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normal_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _normal_value(item) for key, item in value.items()}
    return value


def canonical_value(text: str) -> str:
    """A JSON value in canonical form (tuples are lists, integral floats are ints)."""
    try:
        value = json.loads(text)
    except ValueError:
        return "raw:" + text.strip()
    return json.dumps(_normal_value(value), sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def stdout_digest(text: str) -> str:
    """Digest of a stdin-style test's output (expected or produced)."""
    return _digest(canonical_stdout(text))


def value_digest(text: str) -> str:
    """Digest of a functional test's JSON output (expected or produced)."""
    return _digest(canonical_value(text))


def _limits(timeout_s: float, memory_mb: int, max_output_bytes: int):
    def apply() -> None:
        import resource

        def cap(which: int, value: int) -> None:
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))

        cap(resource.RLIMIT_CPU, math.ceil(timeout_s) + 1)
        cap(resource.RLIMIT_CORE, 0)
        cap(resource.RLIMIT_FSIZE, max_output_bytes)
        if memory_mb > 0:
            cap(resource.RLIMIT_AS, memory_mb * 1024 * 1024)

    return apply


def _run_child(argv: list, workdir: str, stdin_path: str, timeout_s: float, spec: dict) -> str:
    """Run one child; returns "ok", "error" or "timeout". Its stdout is left in workdir/out."""
    with open(stdin_path, "rb") as fin, open(os.path.join(workdir, "out"), "wb") as fout:
        proc = subprocess.Popen(
            argv,
            stdin=fin,
            stdout=fout,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=_limits(timeout_s, int(spec["memory_mb"]), int(spec["max_output_bytes"])),
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, 9)
            proc.wait()
            return "timeout"
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, 9)  # leftovers of a solution that forked
    return "ok" if code == 0 else "error"


def _one_test(index: int, root: str, spec: dict, timeout_s: float) -> list:
    workdir = os.path.join(root, f"t{index}")
    os.mkdir(workdir)
    stdin_path = os.path.join(workdir, "in")
    with open(stdin_path, "w") as f:
        f.write(spec["inputs"][index])
    sol = os.path.join(root, "solution.py")
    if spec.get("fn_name"):
        result_path = os.path.join(workdir, "result.json")
        argv = [
            sys.executable,
            "-I",
            os.path.join(root, "runner.py"),
            sol,
            spec["fn_name"],
            "in",
            result_path,
        ]
        status = _run_child(argv, workdir, stdin_path, timeout_s, spec)
        if status != "ok" or not os.path.exists(result_path):
            return [status if status != "ok" else "error", ""]
        with open(result_path, encoding="utf-8", errors="replace") as f:
            return ["ok", value_digest(f.read())]
    status = _run_child([sys.executable, "-I", sol], workdir, stdin_path, timeout_s, spec)
    if status != "ok":
        return [status, ""]
    with open(os.path.join(workdir, "out"), encoding="utf-8", errors="replace") as f:
        return ["ok", stdout_digest(f.read())]


def _forbid_inspection() -> None:
    """Keep children from reading this process through /proc (PR_SET_DUMPABLE = 0)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)


def run_spec(spec: dict) -> dict:
    """Run every test in ``spec``; returns ``{"results": [[status, digest], ...], ...}``."""
    _forbid_inspection()
    source = _PRELUDE + spec["code"]
    n_tests = len(spec["inputs"])
    try:
        compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return {"results": [["error", ""]] * n_tests, "note": f"compile: {type(exc).__name__}"}
    start = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="harness-") as root:
        with open(os.path.join(root, "solution.py"), "w") as f:
            f.write(source)
        with open(os.path.join(root, "runner.py"), "w") as f:
            f.write(_RUNNER)
        for index in range(n_tests):
            left = float(spec["total_s"]) - (time.monotonic() - start)
            if left <= 0.05:
                results.append(["skipped", ""])
                continue
            results.append(_one_test(index, root, spec, min(float(spec["timeout_s"]), left)))
    return {"results": results, "elapsed_s": round(time.monotonic() - start, 3)}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    outcome = run_spec(spec)
    sys.stdout.write(MARKER + json.dumps(outcome) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
