"""The prepared GPU check (``make gpu-check``): SOD weights and loss on CUDA, torch + transformers only.

No Ray, verl, vLLM or network: it imports ``verl_sod.algos.sod_weights`` (torch only; importing
``verl_sod`` does not import verl) and the plain-loop oracle ``tests/oracle.py``. What it measures:

1. ``compute_sod_weights`` on the device against the oracle (mask-run steps and explicit step ids);
2. its time at B=1024, T=20480 against one elementwise pass ``(s - t).abs()`` (goal <= 2x);
3. the SOD loss against the plain k1 loss, both as a share of one forward+backward of a
   random-init Qwen3-0.6B-config model in bf16 on the same batch (goal: SOD adds <= 1%).

Prints one JSON object of figures and exits 0. Without CUDA it prints ``"skipped": "no CUDA ..."``
and exits 0 (so ``make gpu-check`` is safe anywhere); ``--device cpu --small`` runs every step at
toy sizes on CPU (what the CPU test does). Needs carried: ``benchmarks/gpu_check.py``,
``tests/oracle.py`` and the ``verl_sod`` package (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from oracle import oracle_sod_weights  # noqa: E402  (tests/oracle.py: plain loops, torch + math only)

from verl_sod.algos.sod_weights import compute_sod_weights  # noqa: E402  (torch only)

#: Qwen3-0.6B's published architecture (hidden 1024, 28 layers, GQA 16/8, head 128, vocab 151936)
QWEN3_0_6B = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
SMALL_MODEL = dict(QWEN3_0_6B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip


def agentic_batch(B: int, T: int, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Student/teacher log-probs and a multi-turn mask: assistant runs of 64-512 tokens, tool gaps
    of 16-256, rows of random length (the layout of ``bench_sod_weights.py``)."""
    gen = torch.Generator().manual_seed(seed)
    run = max(2, min(512, T // 8))
    runs = torch.randint(run // 8 + 1, run + 1, (B, T // 8 + 1), generator=gen)
    gaps = torch.randint(run // 32 + 1, run // 2 + 2, (B, T // 8 + 1), generator=gen)
    ends = (runs + gaps).cumsum(dim=1)
    starts = ends - runs - gaps
    pos = torch.arange(T).expand(B, T).contiguous()
    idx = torch.searchsorted(ends, pos, right=True).clamp(max=runs.shape[1] - 1)
    in_run = (pos - starts.gather(1, idx)) < runs.gather(1, idx)
    lengths = torch.randint(T // 4, T + 1, (B, 1), generator=gen)
    mask = (in_run & (pos < lengths)).long()
    student = -torch.rand(B, T, generator=gen) * 3
    teacher = student + torch.randn(B, T, generator=gen) * 0.5
    return student.to(device), teacher.to(device), mask.to(device)


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn`` (after one warm-up), synchronising the device around each call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_against_oracle(device: str) -> dict[str, Any]:
    """Device weights equal the oracle's, with mask-run steps and with explicit (shifted) step ids."""
    s, t, m = agentic_batch(8, 384, device, seed=1)
    out: dict[str, Any] = {}
    run_index = (m.diff(dim=1, prepend=torch.zeros_like(m[:, :1])) == 1).cumsum(1) - 1
    explicit = torch.where(m == 1, run_index + 3, torch.full_like(m, -1))  # ids need not start at 0
    for name, ids in (("mask_runs", None), ("step_ids", explicit)):
        got = compute_sod_weights(s, t, m, step_ids=ids).cpu()
        cpu_ids = None if ids is None else ids.cpu()
        ref = torch.tensor(oracle_sod_weights(s.cpu(), t.cpu(), m.cpu(), step_ids=cpu_ids))
        err = float((got - ref).abs().max())
        out[f"oracle_max_abs_err_{name}"] = err
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    out["oracle_match"] = True
    return out


def weights_vs_elementwise(device: str, B: int, T: int) -> dict[str, Any]:
    s, t, m = agentic_batch(B, T, device, seed=2)
    weights = timed(lambda: compute_sod_weights(s, t, m), device, repeats=5)
    floor = timed(lambda: (s - t).abs(), device, repeats=5)
    return {
        "weights_shape": [B, T],
        "weights_ms": weights * 1e3,
        "elementwise_ms": floor * 1e3,
        "weights_over_elementwise": weights / floor,
        "weights_goal_met": weights / floor <= 2.0,
    }


def _k1(lp_s: torch.Tensor, lp_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The plain k1 distillation loss: token-mean of (log p_S - log p_T) on assistant tokens."""
    return ((lp_s - lp_t) * mask).sum() / mask.sum().clamp(min=1)


def _sod(lp_s: torch.Tensor, lp_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SOD: the same with each token scaled by its step weight (d_k on the detached log-probs)."""
    w = compute_sod_weights(lp_s.detach(), lp_t, mask).to(lp_s.dtype)
    return (w * (lp_s - lp_t) * mask).sum() / mask.sum().clamp(min=1)


def loss_share(device: str, model_cfg: dict, B: int, T: int) -> dict[str, Any]:
    """SOD vs k1 as a share of one bf16 forward+backward of a random-init Qwen3 on the same batch."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(**model_cfg, attn_implementation="sdpa")
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (B, T + 1), device=device)
    _, lp_t, mask = agentic_batch(B, T, device, seed=3)

    def student_logprobs() -> torch.Tensor:
        logits = model(input_ids=ids[:, :-1]).logits
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)

    def step(loss_fn: Callable | None) -> None:
        model.zero_grad(set_to_none=True)
        lp_s = student_logprobs()
        loss = loss_fn(lp_s, lp_t, mask) if loss_fn else lp_s.mean()
        loss.backward()

    fwd_bwd = timed(lambda: step(_k1), device, repeats=3)
    fwd_bwd_sod = timed(lambda: step(_sod), device, repeats=3)
    lp = student_logprobs().detach().requires_grad_(True)  # the losses alone, on the model's log-probs
    k1 = timed(lambda: _k1(lp, lp_t, mask).backward(), device, repeats=10)
    sod = timed(lambda: _sod(lp, lp_t, mask).backward(), device, repeats=10)
    share = (sod - k1) / fwd_bwd
    return {
        "model_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "loss_batch": [B, T],
        "fwd_bwd_k1_ms": fwd_bwd * 1e3,
        "fwd_bwd_sod_ms": fwd_bwd_sod * 1e3,
        "k1_loss_ms": k1 * 1e3,
        "sod_loss_ms": sod * 1e3,
        "sod_extra_share_of_fwd_bwd": share,
        "sod_extra_share_whole_step": (fwd_bwd_sod - fwd_bwd) / fwd_bwd,
        "sod_loss_goal_met": share <= 0.01,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --small)")
    parser.add_argument("--small", action="store_true", help="toy sizes: a smoke run of every step")
    parser.add_argument("--loss-batch", default="4x4096", help="BxT of the forward+backward batch")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"torch": torch.__version__, "device": args.device}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        report["skipped"] = "no CUDA device (torch.cuda.is_available() is False): nothing measured"
        print(json.dumps(report, indent=2))
        return 0
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()
    B, T = (int(x) for x in args.loss_batch.split("x"))
    report |= check_against_oracle(args.device)
    report |= weights_vs_elementwise(args.device, *((32, 512) if args.small else (1024, 20480)))
    model_cfg, shape = (SMALL_MODEL, (2, 64)) if args.small else (QWEN3_0_6B, (B, T))
    report |= loss_share(args.device, model_cfg, *shape)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
