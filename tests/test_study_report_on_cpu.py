"""``python -m verl_sod.study report``: planted effects found (several seeds), nulls not, missing keys."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import matplotlib.image as mpimg
import pytest

from verl_sod.study.__main__ import main
from verl_sod.study.analysis import analyse
from verl_sod.study.report import load_study, write_report
from verl_sod.study.synthetic import SyntheticStudy, write

STRONG = SyntheticStudy(arm_effect={"grpo": 0.0, "uniform": 0.0, "sod": 2.0}, seeds=5, problems=120)
NULL = SyntheticStudy(arm_effect={"grpo": 0.0, "uniform": 0.0, "sod": 0.0}, seeds=5, problems=80)


def _contrast(result, a, b):
    return next(c for c in result["contrasts"] if {c["a"], c["b"]} == {a, b})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planted_arm_effect_is_found(tmp_path, seed):
    spec, summaries = load_study(write(tmp_path / "s", STRONG, seed))
    r = analyse(spec, summaries)
    c = _contrast(r, "sod", "grpo")
    lo = c["lo"] if c["a"] == "sod" else -c["hi"]
    assert lo > 0 and c["p_holm"] < 0.05, c
    assert c["n_seeds"] == 5 and c["n_problems"] > 10  # primary rows only: horizon 8 with faults
    assert r["primary"]["arms"]["sod"]["value"] > r["primary"]["arms"]["grpo"]["value"]


def test_null_study_rarely_rejects():
    """Over 20 null studies, the Holm-corrected family of 3 contrasts rejects in at most 4 (FWER 5%)."""
    import tempfile
    from pathlib import Path

    rejections = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(20):
            spec, summaries = load_study(write(Path(tmp) / f"n{seed}", NULL, seed))
            r = analyse(spec, summaries)
            rejections += any(c["p_holm"] < 0.05 for c in r["contrasts"])
    assert rejections <= 4, rejections


def test_paired_by_problem_not_by_sample(tmp_path):
    spec, summaries = load_study(write(tmp_path / "s", replace(STRONG, samples=4), 0))
    r = analyse(spec, summaries)
    c = _contrast(r, "sod", "grpo")
    h8f = {
        p["problem"]
        for p in next(iter(summaries.values()))["validation"]
        if p["horizon"] == 8 and p["faults"]
    }
    assert c["n_problems"] == len(h8f)  # four samples of a problem make one cell


def test_report_files_and_exploratory_labels(tmp_path):
    study = write(tmp_path / "s", STRONG, 0)
    assert main(["report", str(study)]) == 0
    out = study / "report"
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    names = {"success_by_arm", "contrasts", "success_vs_horizon", "recovery_by_fault_type", "event_study"}
    assert sorted(links) == sorted(f"{n}.png" for n in names)
    for link in links:
        img = mpimg.imread(out / link)
        assert img.shape[1] >= 600 and img.shape[0] >= 250, (link, img.shape)
    assert "## Exploratory (not pre-declared)" in md and "**by `horizon`** (exploratory)" in md
    js = json.loads((out / "report.json").read_text())
    assert js["complete"] and set(js["strata"]["present"]) == {"horizon", "faults"}
    assert set(js["outcomes"]["by_fault_type"]) == {"busy", "timeout", "corrupt"}


def test_missing_keys_degrade_gracefully(tmp_path):
    study = write(tmp_path / "s", replace(NULL, seeds=2, problems=20), 0)
    for f in (study / "summaries").glob("*.json"):
        s = json.loads(f.read_text())
        s["validation"] = [{"problem": r["problem"], "score": r["score"]} for r in s["validation"]]
        s["events"] = None
        f.write_text(json.dumps(s))
    (study / "summaries" / "sod-seed1.json").unlink()  # a partial study
    r = write_report(study)
    assert r["metric"] == "score" and not r["primary"]["available"]
    assert "['faults', 'horizon']" in r["primary"]["reason"]
    assert r["figures_missing"] == ["event_study", "recovery_by_fault_type", "success_vs_horizon"]
    md = (study / "report" / "report.md").read_text()
    assert "Partial study: 5 of 6 runs finished." in md and "Primary endpoint unavailable" in md
    assert "no strata key(s) ['horizon', 'faults']" in md and "No per-step records" in md


def test_one_seed_says_so(tmp_path):
    study = write(tmp_path / "s", replace(STRONG, seeds=1), 0)
    r = write_report(study)
    assert all(c["one_seed"] and c["df"] >= 1 for c in r["contrasts"])
    assert (
        "With one seed, run-to-run variation is not estimated" in (study / "report" / "report.md").read_text()
    )


def test_bad_dirs_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "study directory does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a study directory (no spec.yaml)" in capsys.readouterr().err
