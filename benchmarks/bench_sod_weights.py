"""SOD step weights: vectorised vs the plain-loop oracle, and vs one elementwise pass.

Run with ``make bench``. Every ratio is measured side by side in this one run (median of repeats),
so machine noise hits both sides alike. Targets (issue 2): >= 25x faster than the loop oracle at
B=64, T=4096; <= 60x one elementwise pass at B=256, T=8192.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracle import oracle_sod_weights

from verl_sod import compute_sod_weights


def agentic_batch(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-turn rows: assistant steps of 64-512 tokens, tool outputs of 16-256, random lengths."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.int64)
    lengths = torch.randint(T // 4, T + 1, (B,), generator=gen)
    runs = torch.randint(64, 513, (B, T // 64), generator=gen)
    gaps = torch.randint(16, 257, (B, T // 64), generator=gen)
    # vectorised layout of alternating runs: cumulative boundaries per row
    ends = (runs + gaps).cumsum(dim=1)
    starts = ends - runs - gaps
    pos = torch.arange(T)
    idx = torch.searchsorted(ends, pos.expand(B, T).contiguous(), right=True).clamp(max=runs.shape[1] - 1)
    in_run = (pos - starts.gather(1, idx)) < runs.gather(1, idx)
    mask[in_run & (pos < lengths.unsqueeze(1))] = 1
    student = -torch.rand(B, T, generator=gen) * 3
    teacher = student + torch.randn(B, T, generator=gen) * 0.5
    return student, teacher, mask


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-paper-scale", action="store_true", help="skip B=1024, T=20480")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")

    s, t, m = agentic_batch(64, 4096)
    fast = median_time(lambda: compute_sod_weights(s, t, m), repeats=5)
    slow = median_time(lambda: oracle_sod_weights(s, t, m), repeats=1)
    torch.testing.assert_close(compute_sod_weights(s, t, m), torch.tensor(oracle_sod_weights(s, t, m)))
    steps = int((m[:, 1:] > m[:, :-1]).sum() + m[:, 0].sum())
    print(
        f"[B=64 T=4096, {steps} steps] vectorised {fast * 1e3:8.2f} ms | loop oracle {slow * 1e3:9.1f} ms"
        f" | speed-up {slow / fast:6.1f}x (target >= 25x, aim 100x)"
    )

    s, t, m = agentic_batch(256, 8192, seed=1)
    fast = median_time(lambda: compute_sod_weights(s, t, m), repeats=5)
    floor = median_time(lambda: (s - t).abs(), repeats=5)
    print(
        f"[B=256 T=8192] vectorised {fast * 1e3:8.2f} ms | one elementwise pass {floor * 1e3:7.2f} ms"
        f" | ratio {fast / floor:5.1f}x (target <= 60x, aim 5x)"
    )

    if not args.skip_paper_scale:
        s, t, m = agentic_batch(1024, 20480, seed=2)
        fast = median_time(lambda: compute_sod_weights(s, t, m), repeats=2)
        floor = median_time(lambda: (s - t).abs(), repeats=2)
        print(
            f"[B=1024 T=20480, paper scale] vectorised {fast * 1e3:8.1f} ms"
            f" | elementwise {floor * 1e3:7.1f} ms"
            f" | ratio {fast / floor:5.1f}x"
        )


if __name__ == "__main__":
    main()
