"""The ``sod`` loss against verl's own ``k1`` distillation loss, both through verl's ``distillation_loss``.

Run with ``make bench``. One verl-shaped micro-batch (jagged nested tensors, as verl's engine hands
them to the loss; multi-turn masks with the ``sod_tool_agent``'s explicit step ids) at B=64, T=8192
response tokens; each side is the loss plus its backward, timed interleaved in this one run (median
of repeats; the two sides alternate which goes first) so machine noise hits both alike; the median
of the per-repeat ratios is printed too. Goal (issue 15): sod <= 1.05x k1. On a loaded machine,
``--threads 1`` keeps intra-op threads from waiting on each other, and ``--cpu-time`` times the
process's CPU time instead of the wall clock, which other processes' load does not stretch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sod_weights import agentic_batch
from builders import nested
from helpers import TEACHER_OVERRIDES
from tensordict import TensorDict
from verl.trainer.distillation.losses import distillation_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass

import verl_sod.register  # noqa: F401  (registers the sod loss)
from verl_sod.fields import STEP_IDS_KEY
from verl_sod.presets import compose

PROMPT_LEN = 256
GOAL = 1.05


def micro_batch(B: int, T: int) -> tuple[TensorDict, torch.Tensor, torch.Tensor]:
    """(data, log-prob leaf, its offsets): a verl-shaped micro-batch of B rows of up to T tokens."""
    student, teacher, mask = agentic_batch(B, T, seed=3)
    lengths = [max(int(mask[b].nonzero().max()) + 1, 1) if mask[b].any() else 1 for b in range(B)]
    starts = (mask.diff(dim=1, prepend=torch.zeros_like(mask[:, :1])) == 1).cumsum(1) - 1
    step_ids = torch.where(mask == 1, starts, torch.full_like(mask, -1))

    def full_seq(values: torch.Tensor, b: int) -> torch.Tensor:  # position i: log p(token i+1)
        seq = torch.zeros(PROMPT_LEN + lengths[b])
        seq[PROMPT_LEN - 1 : PROMPT_LEN - 1 + lengths[b]] = values[b, : lengths[b]]
        return seq

    seqs = [full_seq(student, b) for b in range(B)]
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    data = TensorDict(
        {
            "prompts": nested([torch.ones(PROMPT_LEN, dtype=torch.long)] * B),
            "responses": nested([torch.ones(n, dtype=torch.long) for n in lengths]),
            "response_mask": nested([mask[b, :n] for b, n in enumerate(lengths)]),
            "old_log_probs": nested([student[b, :n] for b, n in enumerate(lengths)]),
            "teacher_logprobs": nested([full_seq(teacher, b).unsqueeze(-1) for b in range(B)]),
            "advantages": nested([torch.zeros(n) for n in lengths]),
            STEP_IDS_KEY: nested([step_ids[b, :n] for b, n in enumerate(lengths)]),
        },
        batch_size=[B],
    )
    tokens = int(sum(int(mask[b, :n].sum()) for b, n in enumerate(lengths)))
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=tokens, global_batch_size=B)
    return data, torch.cat(seqs), offsets


def configs(loss_mode: str):
    overrides = [*TEACHER_OVERRIDES, f"distillation.distillation_loss.loss_mode={loss_mode}"]
    cfg = compose("sod", [*overrides, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor), omega_conf_to_dataclass(cfg.distillation)


def loss_step(cfgs, data: TensorDict, flat: torch.Tensor, offsets: torch.Tensor) -> None:
    leaf = flat.clone().requires_grad_(True)
    output = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets)}
    loss, _ = distillation_loss(*cfgs, output, data)
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="64x8192", help="BxT (response tokens)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true", help="time CPU time (all threads), not wall clock")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    B, T = (int(x) for x in args.batch.split("x"))
    data, flat, offsets = micro_batch(B, T)
    sides = {"sod": configs("sod"), "k1": configs("k1")}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for cfgs in sides.values():  # warm-up
        loss_step(cfgs, data, flat, offsets)
    clock = time.process_time if args.cpu_time else time.perf_counter
    for i in range(args.repeats):  # interleaved, so drift hits both; alternating who goes first
        for name in list(sides)[:: 1 if i % 2 == 0 else -1]:
            t0 = clock()
            loss_step(sides[name], data, flat, offsets)
            times[name].append(clock() - t0)
    sod, k1 = (statistics.median(times[name]) for name in ("sod", "k1"))
    ratio = sod / k1
    paired = statistics.median(s / k for s, k in zip(times["sod"], times["k1"], strict=True))
    print(
        f"[distillation_loss B={B} T={T}, loss + backward, {torch.get_num_threads()} threads"
        f"{', CPU time' if args.cpu_time else ''}]"
        f" sod {sod * 1e3:8.1f} ms | verl k1 {k1 * 1e3:8.1f} ms | ratio {ratio:5.2f}x"
        f" (median per-repeat ratio {paired:5.2f}x; goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
