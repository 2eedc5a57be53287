"""A small text task for distilling the real SmolLM2-135M-Instruct into a small student (issue 15).

Short single-turn chat prompts (no tools), rendered with SmolLM2's own chat template; the student is
SmolLM2 cut to its first 2 decoder layers (sharing its tokenizer and embedding) and the teacher is
the converted SmolLM2 checkpoint (:mod:`verl_sod.tiny.real`). The task exists to prove the wiring
with a real pretrained teacher (the reverse-KL distillation signal falls), not to be solved: the
reward only asks for a non-empty answer of at most ``ground_truth`` (6) words, so that GRPO's
advantages are not all zero. The task shape of :mod:`verl_sod.tasks`; hydra option
``task=smollm2_text``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "smollm2_text"
DATA_SOURCE = "verl_sod/smollm2_text"
QUESTIONS = [
    "Name a colour.", "Say hello.", "Name a fruit.", "Name an animal.", "Name a country.",
    "Say a number.", "Name a day.", "Name a month.", "Name a tree.", "Name a city.",
    "Name a sport.", "Name a metal.", "Name a planet.", "Name a drink.", "Name a bird.", "Name a tool.",
]  # fmt: skip
__all__ = ["DATA_SOURCE", "NAME", "compute_score", "final_answer", "launch_overrides", "prepare_inputs"]


def final_answer(text: str) -> str | None:
    """The answer text, or None when it is empty."""
    answer = text.strip()
    return answer or None


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any
) -> dict[str, float]:
    """1.0 for a non-empty answer of at most ``ground_truth`` words, else 0.0."""
    answer = final_answer(solution_str)
    score = float(answer is not None and len(answer.split()) <= int(ground_truth))
    return {"score": score, "acc": score}


def write_parquet(out_dir: str | Path, n_train: int = 64, n_val: int = 8) -> dict[str, str]:
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rows = [
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                "ability": "chat",
                "reward_model": {"style": "rule", "ground_truth": "6"},
                "extra_info": {"index": i, "split": split},
            }
            for i in range(n)
        ]
        paths[split] = str(out / f"{split}.parquet")
        pd.DataFrame(rows).to_parquet(paths[split])
    return paths


def prepare_inputs(data_dir: str | Path, n_val: int = 8, n_train: int = 64) -> dict[str, str]:
    """SmolLM2 (converted once into the cache), the cut student sharing its tokenizer, the parquet."""
    from verl_sod.tiny import real

    teacher = real.prepare_smollm2()
    student = real.build_smollm2_student()
    return {"student": str(student), "teacher": str(teacher), **write_parquet(data_dir, n_train, n_val)}


def launch_overrides(inputs: dict[str, str]) -> list[str]:
    return [
        f"task={NAME}",
        f"actor_rollout_ref.model.path={inputs['student']}",
        f"data.train_files={inputs['train']}",
        f"data.val_files={inputs['val']}",
    ]
