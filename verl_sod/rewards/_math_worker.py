"""Math-verify grading worker: a separate process the reward process can kill.

Run as ``python -I _math_worker.py MEMORY_MB``. It imports nothing from verl_sod (``-I`` keeps this
folder off ``sys.path``), caps its address space, prints ``{"ready": true}`` and then answers one
JSON request per line on stdin, ``{"pred": str, "gold": str, "timeout": int}``, with one JSON line
``{"correct": bool, "error": str}``. Requests are handled in this process's main thread, where
math-verify's ``signal.alarm`` time-outs work; the parent still enforces a wall-clock deadline and
kills this process if an answer takes longer (a computation stuck in C ignores the alarm).
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _limit_memory(memory_mb: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _grade(pred: str, gold: str, timeout_s: int) -> dict:
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout_s)
    if not gold_parsed:
        return {"correct": False, "error": "ground truth could not be parsed"}
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=timeout_s)
    if not pred_parsed:
        return {"correct": False, "error": "answer could not be parsed"}
    return {"correct": bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s)), "error": ""}


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    _limit_memory(memory_mb)
    import math_verify  # noqa: F401  (import cost paid before "ready")

    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply channel
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            reply = _grade(str(request["pred"]), str(request["gold"]), int(request["timeout"]))
        except (Exception, MemoryError) as exc:  # a bad answer must never kill the worker
            reply = {"correct": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
