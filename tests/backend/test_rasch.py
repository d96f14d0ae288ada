"""The Rasch estimator: parameter recovery, standard errors, missing data, extremes, and
agreement with published estimates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backend.exams.rasch import calibrate, scaled_scores, simulate


def _difficulties(n_items: int, seed: int) -> np.ndarray:
    b = np.random.default_rng(seed).standard_normal(n_items)
    return b - b.mean()


def _rmse(est: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((est - true) ** 2)))


def test_recovery_matches_standard_errors_and_shrinks_with_n():
    b = _difficulties(55, 11)
    rmses, ses = [], []
    for n, seed in [(250, 1), (1000, 2), (4000, 3)]:
        x, _ = simulate(n, b, np.random.default_rng(seed))
        res = calibrate(x)
        assert res.converged
        rmses.append(_rmse(res.difficulty, b))
        ses.append(float(np.sqrt(np.mean(res.difficulty_se**2))))
    # At N = 1,000 the error is what the estimator's own standard errors predict.
    assert 0.7 < rmses[1] / ses[1] < 1.35, (rmses, ses)
    # Error shrinks like 1/sqrt(N): a 16x larger sample, about a quarter of the error.
    assert rmses[0] > rmses[1] > rmses[2]
    assert rmses[2] < 0.5 * rmses[0]


def test_no_jml_style_bias():
    # JML inflates difficulties by about k/(k-1) (10% for 10 items); CML must not.
    b = _difficulties(10, 5) * 1.5
    x, _ = simulate(5000, b, np.random.default_rng(6))
    res = calibrate(x)
    slope = float(np.polyfit(b, res.difficulty, 1)[0])
    assert abs(slope - 1.0) < 0.04, slope


def test_standard_errors_match_empirical_spread():
    b = _difficulties(12, 21)
    estimates, ses = [], []
    rng = np.random.default_rng(22)
    for _ in range(40):
        x, _ = simulate(400, b, rng)
        res = calibrate(x)
        estimates.append(res.difficulty)
        ses.append(res.difficulty_se)
    spread = np.std(np.array(estimates), axis=0, ddof=1)
    predicted = np.mean(np.array(ses), axis=0)
    ratio = spread / predicted
    assert 0.75 < float(np.mean(ratio)) < 1.25, ratio


def test_missing_responses_not_reached_and_not_shown():
    b = _difficulties(30, 31)
    rng = np.random.default_rng(32)
    x, _ = simulate(3000, b, rng)
    # A third did not reach the end; a booklet design hides items 0-4 from half of them.
    stops = rng.integers(18, 31, size=3000)
    for v in range(0, 3000, 3):
        x[v, stops[v] :] = np.nan
    x[1::2, :5] = np.nan
    res = calibrate(x)
    assert res.converged
    assert _rmse(res.difficulty, b) < 1.4 * float(np.sqrt(np.mean(res.difficulty_se**2)))
    assert np.isfinite(res.ability).all()


def test_an_unanswered_item_changes_nothing_else():
    b = _difficulties(8, 41)
    x, _ = simulate(800, b, np.random.default_rng(42))
    base = calibrate(x)
    with_gap = calibrate(np.column_stack([x, np.full(len(x), np.nan)]))
    assert with_gap.excluded == {8: "no responses"}
    np.testing.assert_allclose(with_gap.difficulty[:8], base.difficulty, atol=1e-8)
    assert np.isnan(with_gap.difficulty[8])


def test_items_everyone_got_right_or_wrong_are_excluded_not_crashed_on():
    b = _difficulties(6, 51)
    x, _ = simulate(500, b, np.random.default_rng(52))
    x = np.column_stack([x, np.ones(500), np.zeros(500)])
    res = calibrate(x)
    assert res.excluded == {6: "everyone right", 7: "everyone wrong"}
    assert np.isnan(res.difficulty[6:]).all()
    assert np.isfinite(res.difficulty[:6]).all()
    assert abs(float(np.mean(res.difficulty[:6]))) < 1e-9  # identification: mean 0


def test_extreme_persons_get_finite_ordered_abilities():
    b = _difficulties(10, 61)
    x, _ = simulate(300, b, np.random.default_rng(62))
    x[0] = 0
    x[1] = 1
    res = calibrate(x)
    assert np.isfinite(res.ability[:2]).all() and np.isfinite(res.ability_se[:2]).all()
    scores = x.sum(1)
    order = np.argsort(scores, kind="stable")
    # WLE is a strictly increasing function of the raw score on a complete test.
    by_score = {int(s): a for s, a in zip(scores[order], res.ability[order], strict=True)}
    values = [by_score[s] for s in sorted(by_score)]
    assert all(lo < hi for lo, hi in itertools.pairwise(values))
    assert res.ability[0] > -6 and res.ability[1] < 6


def test_fit_statistics_near_one_for_rasch_data_and_flag_a_misfit():
    b = _difficulties(20, 71)
    rng = np.random.default_rng(72)
    x, _theta = simulate(3000, b, rng)
    # Item 0 ignores ability (a guessing item): it must misfit.
    x[:, 0] = (rng.random(3000) < 0.5).astype(float)
    res = calibrate(x)
    assert 0.85 < float(np.median(res.infit[1:])) < 1.15
    assert 0.85 < float(np.median(res.outfit[1:])) < 1.15
    assert res.infit[0] > 1.15 and res.outfit[0] > 1.15
    # Item 0 correlates with ability only through its own share of the raw score.
    assert res.point_measure[0] < 0.2 < 0.3 < float(np.median(res.point_measure[1:]))
    assert 0.7 < res.reliability < 1.0


def test_two_items_match_rasch_closed_form():
    # Rasch (1960): with two items the CML estimate is b2 - b1 = ln(n10 / n01), where n10
    # counts persons with item 1 right and item 2 wrong (Fischer & Molenaar 1995, ch. 3).
    x = np.array([[1, 0]] * 70 + [[0, 1]] * 30 + [[1, 1]] * 50 + [[0, 0]] * 20, dtype=float)
    res = calibrate(x)
    assert res.difficulty[1] - res.difficulty[0] == pytest.approx(np.log(70 / 30), abs=1e-6)


# LSAT section 6 (Bock & Lieberman 1970, Psychometrika 35, 179-197): 1,000 examinees,
# 5 items, as response-pattern frequencies; distributed as `LSAT` in R's ltm package.
LSAT6 = {
    "00000": 3, "00001": 6, "00010": 2, "00011": 11, "00100": 1, "00101": 1, "00110": 3,
    "00111": 4, "01000": 1, "01001": 8, "01010": 0, "01011": 16, "01100": 0, "01101": 3,
    "01110": 2, "01111": 15, "10000": 10, "10001": 29, "10010": 14, "10011": 81, "10100": 3,
    "10101": 28, "10110": 15, "10111": 80, "11000": 16, "11001": 56, "11010": 21,
    "11011": 173, "11100": 11, "11101": 61, "11110": 28, "11111": 298,
}  # fmt: skip
# Rasch difficulties for these data from Rizopoulos (2006), "ltm: An R package for latent
# variable modeling and item response theory analyses", J. Stat. Softw. 17(5), section 4.1
# (`rasch(LSAT, constraint = cbind(6, 1))`: marginal ML, discrimination fixed at 1).
LTM_DIFFICULTY = np.array([-2.8720, -1.0630, -0.2576, -1.3881, -2.2188])


def _lsat6() -> np.ndarray:
    rows = [[int(c) for c in pattern] for pattern, n in LSAT6.items() for _ in range(n)]
    return np.array(rows, dtype=float)


def test_lsat6_data_as_published():
    x = _lsat6()
    assert len(x) == 1000
    # Item proportions correct reported by Bock & Lieberman: .924 .709 .553 .763 .870.
    np.testing.assert_allclose(x.mean(0), [0.924, 0.709, 0.553, 0.763, 0.870], atol=5e-4)


def test_lsat6_agrees_with_published_rasch_estimates():
    res = calibrate(_lsat6())
    published = LTM_DIFFICULTY - LTM_DIFFICULTY.mean()
    # The published values are marginal ML under a normal ability distribution; CML makes no
    # such assumption, so the two agree to within a few hundredths of a logit, not exactly.
    # Both are centred: each fixes the origin differently.
    np.testing.assert_allclose(res.difficulty, published, atol=0.08)
    assert np.argsort(res.difficulty).tolist() == np.argsort(published).tolist()
    assert (res.difficulty_se < 0.2).all()


def test_lsat6_is_the_exact_conditional_ml_optimum():
    # Independent check: maximise the conditional likelihood computed by brute force over
    # all 2^5 patterns with a generic optimiser, and compare.
    from itertools import product

    from scipy.optimize import minimize

    x = _lsat6()
    patterns = np.array(list(product([0, 1], repeat=5)), dtype=float)

    n_by_score = np.bincount(x.sum(1).astype(int), minlength=6)

    def neg_loglik(free):
        b = np.append(free, -free.sum())
        ll = -(x @ b).sum()
        for r in range(6):
            same = patterns[patterns.sum(1) == r]
            ll -= n_by_score[r] * np.log(np.exp(-same @ b).sum())
        return -ll

    opt = minimize(neg_loglik, np.zeros(4), method="BFGS", options={"gtol": 1e-8})
    exact = np.append(opt.x, -opt.x.sum())
    np.testing.assert_allclose(calibrate(x).difficulty, exact, atol=1e-4)


def test_scaled_scores_are_the_documented_linear_map():
    np.testing.assert_allclose(scaled_scores(np.array([-1.0, 0.0, 2.0])), [400, 500, 700])
    np.testing.assert_allclose(scaled_scores(np.array([1.0]), mean=100, sd=15), [115])


@pytest.mark.parametrize(
    "bad",
    [np.array([1, 0, 1]), np.array([[0, 2], [1, 0]]), np.ones((5, 1))],
)
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        calibrate(bad)
