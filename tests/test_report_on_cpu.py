"""``python -m verl_sod.report``: stats against hand-computed values, planted effects, CLI behaviour."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from oracle import oracle_step_types

from verl_sod.report.__main__ import main
from verl_sod.report.agent import failed_cascades, fault_types, silent_steps, success_by_horizon
from verl_sod.report.analysis import summarize
from verl_sod.report.events import event_study
from verl_sod.report.records import (
    ReportError,
    load_records,
    parse_trajectory,
    prompt_clusters,
    prompt_uid,
    resolve_dirs,
    step_table,
    tool_counts,
    tool_pattern,
)
from verl_sod.report.signal import removed_signal
from verl_sod.report.stats import (
    Clusters,
    auroc,
    bootstrap,
    bootstrap_estimate,
    cluster_resample,
    mean_ci,
    mean_diff,
    pearson_r,
    point_biserial,
    stratified_diff,
    stratified_permutation_p,
)
from verl_sod.report.synthetic import NULL_SPEC, AgentSpec, SyntheticSpec, generate, generate_agent

SMALL = SyntheticSpec(train_steps=6, batch=48)
FIGURES = ("divergence_by_k", "weights", "patterns", "tools", "correlation", "event_study", "removed_signal",
           "success_by_horizon")  # fmt: skip

# ---------------------------------------------------------------- pure statistics, table-driven

PB_CASES = [
    ([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], 2 / math.sqrt(5)),  # cov 2, var_x 5, var_y 1
    ([3.0, 1.0, 2.0], [1, 0, 0], math.sqrt(3) / 2),  # cov 1, var_x 2, var_y 2/3
    ([1.0, 2.0, 3.0, 4.0], [1, 1, 0, 0], -2 / math.sqrt(5)),
    ([5.0, 5.0, 1.0, 1.0], [1, 1, 0, 0], 1.0),
    ([1.0, 2.0, 3.0], [0, 0, 0], math.nan),  # constant indicator
    ([2.0, 2.0, 2.0], [0, 1, 0], math.nan),  # constant values
    ([1.0], [1], math.nan),
]


@pytest.mark.parametrize(("values", "ind", "expected"), PB_CASES)
def test_point_biserial(values, ind, expected):
    r = point_biserial(np.array(values), np.array(ind))
    if math.isnan(expected):
        assert math.isnan(r)
    else:
        assert r == pytest.approx(expected, abs=1e-12)
        assert r == pytest.approx(pearson_r(np.array(values), np.array(ind, dtype=float)))


MEAN_CI_CASES = [
    ([1.0, 2.0, 3.0], 2.0, 4.303 / math.sqrt(3)),  # sd 1, t(2) = 4.303
    ([0.0, 2.0], 1.0, 12.706),  # sd sqrt(2), n 2, t(1) = 12.706: half = 12.706 * sqrt(2) / sqrt(2)
    ([4.0] * 40, 4.0, 0.0),
]


@pytest.mark.parametrize(("x", "mean", "half"), MEAN_CI_CASES)
def test_mean_ci(x, mean, half):
    e = mean_ci(np.array(x))
    assert (e.value, e.n) == (pytest.approx(mean), len(x))
    assert e.hi - e.value == pytest.approx(half, abs=1e-9)
    assert e.value - e.lo == pytest.approx(half, abs=1e-9)


def test_mean_ci_degenerate():
    assert math.isnan(mean_ci(np.array([])).value)
    one = mean_ci(np.array([3.0]))
    assert one.value == 3.0 and math.isnan(one.lo)


DIFF_CASES = [
    # values, indicator, strata, mean_diff, stratified (min_n=1)
    ([1, 2, 5, 6], [0, 0, 1, 1], [0, 0, 0, 0], 4.0, 4.0),
    # stratum 0: 3 - 1 = 2 (1 flagged); stratum 1: (10+12)/2 - 4 = 7 (2 flagged) -> (2 + 14) / 3
    ([1, 3, 4, 10, 12], [0, 1, 0, 1, 1], [0, 0, 1, 1, 1], (3 + 10 + 12) / 3 - 2.5, 16 / 3),
    ([1, 2], [0, 0], [0, 0], math.nan, math.nan),
]


@pytest.mark.parametrize(("v", "ind", "strata", "diff", "strat"), DIFF_CASES)
def test_mean_and_stratified_diff(v, ind, strata, diff, strat):
    v, ind, strata = np.array(v, float), np.array(ind, bool), np.array(strata)
    for got, want in ((mean_diff(v, ind), diff), (stratified_diff(v, ind, strata, min_n=1), strat)):
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


def test_stratified_diff_skips_thin_strata():
    v = np.array([1.0, 3.0, 4.0, 10.0, 12.0])
    ind = np.array([0, 1, 0, 1, 1], bool)
    assert math.isnan(stratified_diff(v, ind, np.array([0, 0, 1, 1, 1]), min_n=2))


def test_bootstrap_is_deterministic_per_seed():
    x = np.random.default_rng(5).normal(size=50)

    def stat(i):
        return float(x[i].mean())

    a = bootstrap(stat, x.size, reps=200, seed=3)
    b = bootstrap(stat, x.size, reps=200, seed=3)
    c = bootstrap(stat, x.size, reps=200, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    e1 = bootstrap_estimate(stat, x.size, reps=200, seed=3)
    assert e1 == bootstrap_estimate(stat, x.size, reps=200, seed=3)
    assert e1.lo < x.mean() < e1.hi


def test_clusters_group_rows():
    c = Clusters.from_ids(np.array([2, 0, 2, 1, 0, 2]))
    groups = [sorted(c.order[s : s + n].tolist()) for s, n in zip(c.start, c.size, strict=True)]
    assert groups == [[1, 4], [3], [0, 2, 5]]


def test_cluster_resample_keeps_whole_trajectories():
    ids = np.repeat(np.arange(7), [1, 2, 3, 4, 1, 2, 5])
    c = Clusters.from_ids(ids)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = cluster_resample(c, rng)
        drawn = np.bincount(ids[idx], minlength=7)
        sizes = np.bincount(ids, minlength=7)
        # every cluster appears a whole number of times: all of its rows or none
        assert np.all(drawn % sizes == 0)
        copies = drawn // sizes
        assert copies.sum() == 7  # as many clusters drawn as there are
        for cl in np.flatnonzero(copies):
            rows, counts = np.unique(idx[ids[idx] == cl], return_counts=True)
            assert rows.tolist() == np.flatnonzero(ids == cl).tolist()
            assert set(counts.tolist()) == {copies[cl]}


def test_cluster_bootstrap_is_wider_for_clustered_data():
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(40), 10)
    x = rng.normal(size=40)[ids] + 0.1 * rng.normal(size=ids.size)  # strongly clustered

    def stat(i):
        return float(x[i].mean())

    iid = bootstrap_estimate(stat, x.size, reps=300, seed=0)
    clu = bootstrap_estimate(stat, x.size, cluster_ids=ids, reps=300, seed=0)
    assert (clu.hi - clu.lo) > 2 * (iid.hi - iid.lo)


# ---------------------------------------------------------------- records

GOOD = {
    "step": 3, "uid": "abc_0_0", "reward": 1.0, "pattern": "erroneous", "weighting": "divergence",
    "response_tokens": 26,
    "tool": {"tool_calls": 1, "tool_errors": 1, "tool_timeouts": 0, "tool_format_errors": 0, "recovered": 0},
    "steps": [{"k": 0, "tokens": 17, "d": 0.12, "w": 1.0, "w_applied": 1.0, "outcome": "error"},
              {"k": 1, "tokens": 9, "d": 0.40, "w": 0.30, "w_applied": 0.30, "outcome": "none"}],
}  # fmt: skip


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("steps"),
        lambda r: r.update(pattern="weird"),
        lambda r: r.update(reward="1"),
        lambda r: r["steps"][0].update(outcome="boom"),
        lambda r: r["steps"][1].pop("d"),
        lambda r: r["steps"][1].update(k=1.5),
        lambda r: r.update(tool=[1, 2]),
    ],
)
def test_parse_rejects_malformed(mutate):
    rec = json.loads(json.dumps(GOOD))
    mutate(rec)
    with pytest.raises(ValueError):
        parse_trajectory(rec)


def test_step_table_and_tool_fallback():
    t = parse_trajectory(GOOD)
    tab = step_table([t], right_threshold=1.0)
    assert tab.prev_failed.tolist() == [False, True] and tab.right.tolist() == [True]
    assert tool_counts(t) == (1, 1, 0, False)
    no_tool = parse_trajectory({**GOOD, "tool": None})
    assert tool_counts(no_tool) == (1, 1, 0, True)
    assert step_table([t], right_threshold=1.5).right.tolist() == [False]


def test_resolve_dirs_accepts_both_forms(tmp_path):
    generate(tmp_path / "run", replace(SMALL, train_steps=1, batch=2))
    assert resolve_dirs(tmp_path / "run") == (tmp_path / "run", tmp_path / "run" / "sod_steps")
    assert resolve_dirs(tmp_path / "run" / "sod_steps")[1] == tmp_path / "run" / "sod_steps"
    with pytest.raises(ReportError, match="does not exist"):
        resolve_dirs(tmp_path / "nope")
    with pytest.raises(ReportError, match="no sod_steps"):
        resolve_dirs(tmp_path)
    (tmp_path / "empty" / "sod_steps").mkdir(parents=True)
    with pytest.raises(ReportError, match="no step_"):
        load_records(tmp_path / "empty")


# ---------------------------------------------------------------- CLI on synthetic runs


def _report(tmp_path: Path, spec: SyntheticSpec, seed: int, *extra: str) -> tuple[Path, dict]:
    run = generate(tmp_path / "run", spec, seed)
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out), "--reps", "300", *extra]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _excludes_zero(e: dict) -> bool:
    return e["lo"] > 0 or e["hi"] < 0


def _check_outputs(out: Path, extra: tuple[str, ...] = ()) -> None:
    for name in (*FIGURES, *extra):
        img = mpimg.imread(out / f"{name}.png")
        h, w = img.shape[:2]
        assert w >= 700 and h >= 400, (name, img.shape)
        assert np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 20, name
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(f"{n}.png" for n in (*FIGURES, *extra))
    assert all((out / link).is_file() for link in links)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_planted_error_effect_is_recovered(tmp_path, seed):
    spec = replace(SMALL, error_effect=0.25, wrong_shift=0.0)
    out, s = _report(tmp_path, spec, seed=seed)
    err = s["error_divergence"]
    assert err["available"] and err["n_after_error"] > 30
    assert _excludes_zero(err["diff"]) and abs(err["diff"]["value"] - 0.25) < 0.06
    assert abs(err["stratified"]["value"] - 0.25) < 0.06 and len(err["strata_used"]) >= 2
    assert err["r"]["lo"] > 0.3 and err["auroc"]["lo"] > 0.75 and err["stratified_perm_p"] < 0.01
    _check_outputs(out)
    md = (out / "report.md").read_text()
    assert "Steps after a tool error have mean d" in md and "the CI excludes 0" in md
    assert "stratified permutation p" in md and "## Weight patterns vs tool-outcome patterns" in md


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_planted_correctness_effect_is_recovered(tmp_path, seed):
    spec = replace(SMALL, error_effect=0.0, wrong_shift=0.2, p_right_after_error=0.85)
    _, s = _report(tmp_path, spec, seed=seed)
    cor = s["correctness"]
    assert cor["diff_max_d"]["hi"] < 0 and cor["r_max_d"]["hi"] < 0 and cor["auroc_max_d_wrong"]["lo"] > 0.6
    assert abs(s["error_divergence"]["diff"]["value"]) < 0.05  # errors do not move d here


def test_null_datasets_rarely_exclude_zero():
    """Over 8 null datasets, each CI / test rejects in at most 2 (5% expected: 0.4)."""
    rejected = {"r": 0, "diff": 0, "stratified": 0, "r_max_d": 0, "auroc": 0, "perm": 0}
    for seed in range(11, 19):
        loaded = _loaded(replace(NULL_SPEC, train_steps=4, batch=48), seed)
        s, _ = summarize(loaded, reps=200, seed=seed)
        err, cor = s["error_divergence"], s["correctness"]
        for name, e in (("r", err["r"]), ("diff", err["diff"]), ("stratified", err["stratified"]),
                        ("r_max_d", cor["r_max_d"])):  # fmt: skip
            rejected[name] += _excludes_zero(e)
        rejected["auroc"] += not (err["auroc"]["lo"] <= 0.5 <= err["auroc"]["hi"])
        rejected["perm"] += err["stratified_perm_p"] < 0.05
    assert all(v <= 2 for v in rejected.values()), rejected


def _loaded(spec: SyntheticSpec, seed: int):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return load_records(generate(Path(tmp) / "run", spec, seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompt_clusters_widen_the_ci_when_prompts_share_an_effect(seed):
    loaded = _loaded(replace(SMALL, prompt_effect=0.5, train_steps=4), seed)
    by_prompt, _ = summarize(loaded, reps=300, seed=seed, cluster="prompt")
    by_traj, _ = summarize(loaded, reps=300, seed=seed, cluster="trajectory")
    width = lambda s: s["error_divergence"]["mean_not"]["hi"] - s["error_divergence"]["mean_not"]["lo"]  # noqa: E731
    assert width(by_prompt) > 1.8 * width(by_traj)
    assert by_prompt["bootstrap"]["clusters"] == 4 * 6 and by_traj["bootstrap"]["clusters"] == 4 * 48


UID_CASES = [("3f2a-9c_0_3", "3f2a-9c"), ("s1g2_7_0", "s1g2"), ("x_1_2_3", "x_1"), ("nounderscore", None),
             ("a_b_c", None), ("_1_2", None)]  # fmt: skip


@pytest.mark.parametrize(("uid", "prompt"), UID_CASES)
def test_prompt_uid(uid, prompt):
    assert prompt_uid(uid) == prompt


def test_prompt_clusters_are_per_training_step():
    recs = [parse_trajectory({**GOOD, "step": st, "uid": uid}) for st, uid in
            [(1, "a_0_0"), (1, "a_1_0"), (2, "a_0_0"), (1, "b_0_0"), (1, "junk"), (1, "junk")]]  # fmt: skip
    assert prompt_clusters(recs).tolist() == [0, 0, 1, 2, 3, 4]


AUROC_CASES = [
    ([1, 2, 3, 4], [0, 0, 1, 1], 1.0),
    ([1, 2, 3, 4], [1, 1, 0, 0], 0.0),
    ([1, 1, 1, 1], [0, 1, 0, 1], 0.5),
    ([2, 1, 3], [1, 0, 0], 0.5),
    ([1, 2, 2, 3], [0, 1, 0, 1], 0.875),  # pairs (2>1, 2=2 half, 3>1, 3>2) / 4
    ([1, 2], [0, 0], math.nan),
]


@pytest.mark.parametrize(("v", "ind", "want"), AUROC_CASES)
def test_auroc(v, ind, want):
    got = auroc(np.array(v, float), np.array(ind, bool))
    assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_is_comparable_across_error_rates_and_r_is_not(seed):
    rng = np.random.default_rng(seed)

    def sample(share):
        ind = rng.random(4000) < share
        return rng.normal(size=4000) + 1.0 * ind, ind

    (v1, i1), (v2, i2) = sample(0.05), sample(0.5)
    assert abs(auroc(v1, i1) - auroc(v2, i2)) < 0.04  # both ~ Phi(1 / sqrt 2) = 0.76
    assert point_biserial(v2, i2) - point_biserial(v1, i1) > 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_permutation_test(seed):
    rng = np.random.default_rng(seed)
    strata = rng.integers(0, 3, 300)
    ind = rng.random(300) < 0.1 + 0.3 * strata  # errors cluster at later strata
    confounded = strata.astype(float) + rng.normal(size=300) * 0.3  # d rises with the stratum only
    planted = confounded + 0.4 * ind
    assert stratified_permutation_p(confounded, ind, strata, reps=300, seed=seed) > 0.01
    assert mean_diff(confounded, ind) > 0.3  # the raw difference is all confounding
    assert stratified_permutation_p(planted, ind, strata, reps=300, seed=seed) < 0.01


def test_pattern_vs_tool_crosstab(tmp_path):
    _, s = _report(tmp_path, replace(SMALL, p_right_after_error=0.2), seed=4)
    x = s["correctness"]["pattern_vs_tool"]
    total = sum(c["n"] for row in x["cells"].values() for c in row.values())
    assert total == s["counts"]["trajectories"]
    by_tool = x["right_frac_by_tool_pattern"]
    assert by_tool["no_failure"]["right_frac"] > by_tool["failed_not_recovered"]["right_frac"] + 0.3
    t = parse_trajectory(GOOD)
    assert tool_pattern(t) == "failed_not_recovered"


def test_no_error_dataset(tmp_path):
    spec = replace(SMALL, p_error=0.0, p_timeout=0.0, train_steps=1, batch=12, with_tool=False)
    out, s = _report(tmp_path, spec, seed=3)
    assert s["error_divergence"]["available"] is False
    md = (out / "report.md").read_text()
    assert "no tool errors in the records, correlation undefined" in md
    assert "Only 12 trajectories" in md
    _check_outputs(out)


def test_malformed_lines_are_reported_and_skipped(tmp_path, capsys):
    run = generate(tmp_path / "run", replace(SMALL, train_steps=2, batch=10), seed=1)
    f = run / "sod_steps" / "step_000002.jsonl"
    lines = f.read_text().splitlines()
    lines[3] = "{not json"
    lines.insert(6, json.dumps({**GOOD, "pattern": "bogus"}))
    f.write_text("\n".join(lines) + "\n")
    assert main([str(run), "--reps", "50"]) == 0
    cap = capsys.readouterr()
    assert "skipped 2 malformed line(s)" in cap.out
    assert f"{f}:4:" in cap.err and f"{f}:7:" in cap.err
    s = json.loads((run / "report" / "summary.json").read_text())
    assert s["skipped_lines"] == 2 and s["counts"]["trajectories"] == 19


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "run" / "sod_steps").mkdir(parents=True)
    assert main([str(tmp_path / "run")]) == 2
    assert "no step_*.jsonl" in capsys.readouterr().err
    (tmp_path / "run" / "sod_steps" / "step_000001.jsonl").write_text("garbage\n[]\n")
    assert main([str(tmp_path / "run")]) == 2
    assert "no valid records" in capsys.readouterr().err


def test_subprocess_with_metrics_and_ablation(tmp_path):
    run = generate(tmp_path / "run", replace(SMALL, train_steps=3, batch=16), seed=2)
    for f in (run / "sod_steps").glob("*.jsonl"):
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        for r in recs:
            r["weighting"] = "uniform"
            for st in r["steps"]:
                st["w_applied"] = 1.0
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    metrics = [{"step": s, "data": {"actor/agent/tool_failure_rate": 0.1 * s}} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    proc = subprocess.run(
        [sys.executable, "-m", "verl_sod.report", str(run / "sod_steps"), "--reps", "50", "--title", "T1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = run / "report"
    _check_outputs(out, extra=("metrics",))
    s = json.loads((out / "summary.json").read_text())
    assert s["weights"]["w_applied_differs"] and s["weights"]["attenuated_frac_applied"] == 0.0
    assert s["weightings"] == ["uniform"]
    assert (out / "report.md").read_text().startswith("# T1")
    missing = subprocess.run(
        [sys.executable, "-m", "verl_sod.report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "error: run directory does not exist" in missing.stderr


# ---------------------------------------------------------------- agent metrics (long-horizon-style records)


def _traj(outcomes, faults=None, extra=None, reward=0.0, uid="p_0_0", w=None):
    steps = [
        {"k": k, "tokens": 10, "d": 0.1 + 0.1 * k, "w": 1.0 if w is None else w[k], "outcome": o,
         **({} if faults is None else {"fault": faults[k]})}
        for k, o in enumerate(outcomes)
    ]  # fmt: skip
    rec = {"step": 1, "uid": uid, "reward": reward, "pattern": "stable", "tool": None, "steps": steps}
    return parse_trajectory({**rec, "extra": extra or {}})


CASCADE_CASES = [
    (["ok", "ok", "none"], [], None),
    (["error", "error", "ok", "none"], [2], None),
    (["ok", "error", "ok", "timeout", "error", "error", "none"], [1, 3], None),
    (["error", "none", "error", "ok"], [2], None),  # a step without a call does not end a cascade
    (["ok", "ok", "ok", "ok", "none"], [], 3),  # silent fault (labelled, outcome ok) at step 0
]


@pytest.mark.parametrize(("outcomes", "runs", "silent"), CASCADE_CASES)
def test_cascades_and_silent_steps(outcomes, runs, silent):
    faults = ["corrupt" if silent is not None and k == 0 else "none" for k in range(len(outcomes))]
    t = _traj(outcomes, faults)
    assert failed_cascades(t) == runs
    assert silent_steps(t) == (None if silent is None else len(outcomes) - 1)


def test_fault_types_count_next_calls_and_success():
    trajs = [
        _traj(["error", "ok", "none"], ["busy", "none", "none"], {"success": 1.0, "horizon": 1}),
        _traj(["error", "error", "none"], ["busy", "busy", "none"], {"success": 0.0, "horizon": 1}),
        _traj(["ok", "timeout", "none", "ok"], ["corrupt", "timeout", "none", "none"], {"success": 0.0}),
    ]
    ft = fault_types(trajs, 1.0)
    # busy: step 0 of t0 -> next ok; step 0 of t1 -> next fails; step 1 of t1 -> no later call
    assert ft["busy"]["steps"] == 3 and ft["busy"]["no_next_call"] == 1
    assert ft["busy"]["p_next_ok"] == {"n": 2, "rate": 0.5}
    assert ft["busy"]["p_success"] == {"n": 2, "rate": 0.5}
    assert ft["corrupt"]["p_next_ok"] == {"n": 1, "rate": 0.0} and ft["timeout"]["p_next_ok"]["rate"] == 1.0
    by_h = success_by_horizon(trajs, 1.0)
    assert by_h["1"]["faults"] == {"n": 2, "rate": 0.5} and by_h["all"]["faults"]["n"] == 1
    unlabelled = fault_types([_traj(["error", "ok", "none"], reward=1.0)], 1.0)  # outcomes stand in
    assert list(unlabelled) == ["error"] and unlabelled["error"]["p_success"]["rate"] == 1.0


def test_removed_signal_of_recorded_weights_matches_a_loop():
    rng = np.random.default_rng(0)
    codes = {0: "none", 1: "ok", 2: "error", 3: "timeout"}
    trajs = []
    for i in range(40):
        n = int(rng.integers(1, 7))
        outcomes = [codes[int(c)] for c in rng.integers(0, 4, n)]
        trajs.append(_traj(outcomes, uid=f"p{i}_0_0", w=[float(x) for x in rng.uniform(0, 1.2, n)]))
    got = removed_signal(trajs)["weightings"]["divergence"]
    removed, signal = {}, {}
    for t in trajs:
        types = oracle_step_types(
            [{"none": 0, "ok": 1, "error": 2, "timeout": 3}[s.outcome] for s in t.steps]
        )
        for s, ty in zip(t.steps, types, strict=True):
            removed[ty] = removed.get(ty, 0.0) + (1 - s.w) * s.d * s.tokens
            signal[ty] = signal.get(ty, 0.0) + s.d * s.tokens
    for ty in signal:
        assert got[ty] == pytest.approx(removed[ty] / signal[ty], rel=1e-5), ty
    assert got["all"] == pytest.approx(sum(removed.values()) / sum(signal.values()), rel=1e-5)


@pytest.fixture(scope="module")
def agent_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent")
    run = generate_agent(tmp / "run", AgentSpec(), seed=3)
    out = tmp / "out"
    assert main([str(run), "--out", str(out), "--reps", "300"]) == 0
    return out, json.loads((out / "summary.json").read_text())


NEXT_OK_CASES = [("busy", 0.9), ("timeout", 0.6), ("stale_operand", 0.3), ("corrupt", 1 - 0.18)]


@pytest.mark.parametrize(("label", "planted"), NEXT_OK_CASES)
def test_planted_p_next_ok_per_fault_type(agent_report, label, planted):
    row = agent_report[1]["agent"]["fault_types"][label]["p_next_ok"]
    assert row["n"] >= 60
    assert abs(row["rate"] - planted) < 4 * math.sqrt(planted * (1 - planted) / row["n"]) + 0.01


@pytest.mark.parametrize("h", [2, 4, 8])
def test_planted_success_by_horizon(agent_report, h):
    row = agent_report[1]["agent"]["success_by_horizon"][str(h)]
    clean, faulty = row["no_faults"], row["faults"]
    p = 1 - 0.05 * h
    assert clean["n"] >= 30 and abs(clean["rate"] - p) < 4 * math.sqrt(p * (1 - p) / clean["n"])
    assert faulty["rate"] < clean["rate"]
    assert agent_report[1]["agent"]["fault_types"]["corrupt"]["p_success"]["rate"] == 0.0


def test_planted_content_divergence_and_removed_signal(agent_report):
    s = agent_report[1]
    cd = s["agent"]["content_divergence"]
    assert abs(cd["failed_call"]["d_content"]["value"] - cd["failed_call"]["d"]["value"] - 0.3) < 0.01
    assert abs(cd["normal"]["d_content"]["value"] - cd["normal"]["d"]["value"]) < 0.01
    rs = s["removed_signal"]["weightings"]
    exact = [("uniform", t, 0.0) for t in ("normal", "failed_call", "after_failure", "recovery", "all")]
    exact += [("tool_error_gate", "normal", 0.0), ("tool_error_gate", "after_failure", 1.0),
              ("tool_error_gate", "recovery", 1.0), ("threshold", "normal", 0.0)]  # fmt: skip
    for name, kind, want in exact:
        assert rs[name][kind] == pytest.approx(want, abs=1e-9), (name, kind)
    assert rs["divergence"]["failed_call"] > rs["divergence"]["normal"] + 0.3
    assert s["removed_signal"]["batch_level"] == ["random", "position_median"]


def test_planted_event_study_split_by_recovery(agent_report):
    out, s = agent_report
    ev = s["event_study"]
    assert ev["offsets"] == [-2, -1, 0, 1, 2, 3, 4] and min(ev["events"].values()) >= 20
    rec, stuck = ev["recovered"]["d"], ev["not_recovered"]["d"]
    for i in (4, 5):  # offsets +2, +3: the unrecovered stay off the teacher (stuck_effect 0.4)
        assert stuck[i]["lo"] > rec[i]["hi"] and stuck[i]["value"] - rec[i]["value"] > 0.3
    assert abs(stuck[1]["value"] - rec[1]["value"]) < 0.05  # offset -1: no planted pre-trend
    w_rec, w_stuck = ev["recovered"]["w"], ev["not_recovered"]["w"]
    assert w_stuck[4]["hi"] < w_rec[4]["lo"]
    _check_outputs(out)
    md = (out / "report.md").read_text()
    for heading in ("### Success by horizon", "### Fault types", "### Cascades", "### Event study"):
        assert heading in md
    assert "| +2 |" in md and "(batch-level)" in md


def test_event_study_cells_are_the_plain_means():
    trajs = [
        _traj(["ok", "error", "ok", "none"], uid="a_0_0"),
        _traj(["error", "error", "none"], uid="b_0_0"),
        _traj(["ok", "ok"], uid="c_0_0"),
        _traj(["timeout", "ok"], uid="d_0_0"),
    ]
    ev = event_study(trajs, reps=50, seed=0)
    assert ev["events"] == {"recovered": 2, "not_recovered": 1}
    # d = 0.1 + 0.1 k; recovered: a (event k=1) at offsets -1..+2, d (event k=0) at offsets 0, +1
    assert [c["value"] if c["n"] else None for c in ev["recovered"]["d"]] == pytest.approx(
        [None, 0.1, 0.15, 0.25, 0.4, None, None]
    )
    assert [c["n"] for c in ev["not_recovered"]["d"]] == [0, 0, 1, 1, 1, 0, 0]
    # offset 0 of the recovered: two prompt clusters -> a CI; offset -1: one cluster -> none
    assert math.isfinite(ev["recovered"]["d"][2]["lo"]) and math.isnan(ev["recovered"]["d"][1]["lo"])
