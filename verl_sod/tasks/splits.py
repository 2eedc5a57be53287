"""Leak-free problem splits shared by the CPU tasks: a problem's split is a hash of its text.

Every problem has a canonical text (its question). :func:`split_of` maps that text to ``sft``,
``train`` or ``val`` by a fixed hash bucket, so the three splits are disjoint by construction,
whatever the seeds and sizes each caller draws with; :func:`draw_unique` draws distinct problems of
one split from a seeded generator.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection
from typing import TypeVar

P = TypeVar("P")
#: split -> [low, high) range of the 0..99 hash bucket
SPLIT_BUCKETS: dict[str, tuple[int, int]] = {"val": (0, 15), "sft": (15, 50), "train": (50, 100)}


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that does not change between processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(key: str) -> str:
    """The split the problem with canonical text ``key`` belongs to."""
    bucket = stable_hash("split:" + key) % 100
    return next(name for name, (lo, hi) in SPLIT_BUCKETS.items() if lo <= bucket < hi)


def draw_unique(
    draw: Callable[[random.Random], P],
    key: Callable[[P], str],
    n: int,
    seed: int,
    split: str | None,
    exclude: Collection[str] = (),
) -> list[P]:
    """``n`` distinct problems (by ``key``) from ``draw(rng)``, all in ``split`` (any split if None),
    none of whose keys is in ``exclude``."""
    if split is not None and split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_BUCKETS)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[P] = []
    for _ in range(200 * n + 10_000):
        if len(out) == n:
            break
        problem = draw(rng)
        k = key(problem)
        if k in seen or k in exclude or (split is not None and split_of(k) != split):
            continue
        seen.add(k)
        out.append(problem)
    if len(out) < n:
        raise ValueError(
            f"only {len(out)} distinct problems of split {split!r} found for n={n}; "
            "ask for fewer or widen the problem space"
        )
    return out
