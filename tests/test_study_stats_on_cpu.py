"""``verl_sod.study.stats``: t distribution, Holm, seeds needed, and the two-way paired CI on planted data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verl_sod.report.stats import t975
from verl_sod.study.stats import betainc, holm, paired_two_way, seed_mean_ci, seeds_needed, t_ppf, t_sf2


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 20, 30])
def test_t_quantiles_match_the_table(df):
    assert t_ppf(0.975, df) == pytest.approx(t975(df), abs=1.5e-3)
    assert t_sf2(t975(df), df) == pytest.approx(0.05, abs=2e-4 * df + 1e-4)
    assert t_ppf(0.025, df) == pytest.approx(-t_ppf(0.975, df))


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 10.0])
def test_t_sf2_is_cauchy_at_one_df(t):
    assert t_sf2(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-10)


BETA_CASES = [(1.0, 1.0, 0.3, 0.3), (2.0, 1.0, 0.5, 0.25), (1.0, 3.0, 0.2, 1 - 0.8**3), (0.5, 0.5, 0.5, 0.5)]


@pytest.mark.parametrize(("a", "b", "x", "want"), BETA_CASES)
def test_betainc_known_values(a, b, x, want):
    assert betainc(a, b, x) == pytest.approx(want, abs=1e-10)
    assert betainc(a, b, x) == pytest.approx(1 - betainc(b, a, 1 - x), abs=1e-10)


HOLM_CASES = [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
    ([0.5, 0.001], [0.5, 0.002]),
    ([0.02, math.nan, 0.9], [0.04, math.nan, 0.9]),
    ([0.6, 0.6, 0.6], [1.0, 1.0, 1.0]),
]


@pytest.mark.parametrize(("p", "want"), HOLM_CASES)
def test_holm(p, want):
    got = holm(p)
    for g, w in zip(got, want, strict=True):
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w)


def test_seeds_needed():
    # sigma / delta = 1 at 80% power, alpha 0.05: the paired t-test needs 10 (textbook value)
    assert seeds_needed(0.05, 0.05) == 10
    n = seeds_needed(0.08, 0.05)
    need = lambda k: ((t_ppf(0.975, k - 1) + t_ppf(0.8, k - 1)) * 0.08 / 0.05) ** 2  # noqa: E731
    assert n >= need(n) and n - 1 < need(n - 1)
    assert seeds_needed(0.1, 0.05) > seeds_needed(0.05, 0.05)
    assert seeds_needed(float("nan"), 0.05) is None and seeds_needed(0.0, 0.05) == 2


def test_seed_mean_ci_by_hand():
    e = seed_mean_ci([0.5, 0.6, 0.7])
    assert e["value"] == pytest.approx(0.6) and e["sd"] == pytest.approx(0.1)
    assert e["hi"] - e["value"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-3)
    assert math.isnan(seed_mean_ci([0.5])["lo"])


def test_paired_two_way_by_hand():
    D = np.array([[1.0, 3.0], [3.0, 5.0]])  # seed effect 2, problem effect 2, no interaction
    e = paired_two_way(D)
    # V_seed = ((2-3)^2 + (4-3)^2) / 4 * 2 = 1 = V_problem; V_cell = (4 + 0 + 0 + 4) / 16 * 4/3 = 2/3
    assert e["value"] == 3.0 and e["var_seed"] == pytest.approx(1.0) and e["var_cell"] == pytest.approx(2 / 3)
    assert e["se"] == pytest.approx(math.sqrt(4 / 3)) and e["df"] == 1
    one = paired_two_way(np.array([[0.0, 1.0, 2.0]]))
    assert one["one_seed"] and one["df"] == 2 and one["se"] == pytest.approx(math.sqrt(1 / 3))


def _simulate(rng, mu, S=5, P=40, sd_seed=0.06, sd_problem=0.15, sd_cell=0.3):
    return (
        mu
        + sd_seed * rng.normal(size=(S, 1))
        + sd_problem * rng.normal(size=(1, P))
        + sd_cell * rng.normal(size=(S, P))
    )


@pytest.mark.parametrize("master", [0, 1, 2])
def test_two_way_ci_covers_and_naive_does_not(master):
    """Over 300 planted datasets: the two-way CI covers the true mean ~95% of the time; the
    naive interval that treats all S x P cells as independent covers far less."""
    rng = np.random.default_rng(master)
    mu, cover, naive_cover = 0.05, 0, 0
    for _ in range(300):
        D = _simulate(rng, mu)
        e = paired_two_way(D)
        cover += e["lo"] <= mu <= e["hi"]
        half = 1.96 * D.std(ddof=1) / math.sqrt(D.size)
        naive_cover += abs(D.mean() - mu) <= half
    assert 0.90 <= cover / 300 <= 0.995, cover
    assert naive_cover / 300 < 0.85, naive_cover


@pytest.mark.parametrize("master", [0, 1, 2])
def test_two_way_detects_a_planted_difference(master):
    rng = np.random.default_rng(100 + master)
    hits = sum(paired_two_way(_simulate(rng, 0.25))["p"] < 0.05 for _ in range(100))
    nulls = sum(paired_two_way(_simulate(rng, 0.0))["p"] < 0.05 for _ in range(200))
    assert hits >= 80, hits
    assert nulls <= 20, nulls  # about 10 expected at alpha 0.05
