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


# --- Issue #20: skipped answers at scale, model checks, refusals, KR-20 ----------------------
#
# Every reference number below is computed here, by brute force or from the textbook formula,
# with no code shared with backend.exams.rasch.


def _brute_loglik(x: np.ndarray):
    """The conditional log-likelihood of ``x`` as a function of b, summed over persons:
    log P(x_v | raw score, items answered), the normaliser enumerated over every subset of
    the answered items with that score (persons with extreme scores contribute 0)."""
    from collections import Counter
    from itertools import combinations

    keys: Counter = Counter()
    totals = np.zeros(x.shape[1])
    for row in x:
        items = tuple(np.flatnonzero(~np.isnan(row)))
        r = int(np.nansum(row))
        if 0 < r < len(items):
            keys[(items, r)] += 1
            totals += np.nan_to_num(row)
    subsets = {key: np.array(list(combinations(key[0], key[1]))) for key in keys}

    def loglik(b: np.ndarray) -> float:
        ll = -float(totals @ b)
        for key, n in keys.items():
            ll -= n * np.log(np.exp(-b[subsets[key]].sum(1)).sum())
        return ll

    return loglik


def _brute_cml(x: np.ndarray):
    """Maximise the brute-force conditional likelihood (mean difficulty 0) with BFGS; the
    standard errors from a finite-difference Hessian of it."""
    from scipy.optimize import minimize

    k = x.shape[1]
    loglik = _brute_loglik(x)

    def full(free):
        return np.append(free, -free.sum())

    opt = minimize(lambda f: -loglik(full(f)), np.zeros(k - 1), method="BFGS",
                   options={"gtol": 1e-9})  # fmt: skip
    b = full(opt.x)
    h = 1e-4
    hess = np.zeros((k - 1, k - 1))
    for i in range(k - 1):
        for j in range(k - 1):
            ei, ej = np.eye(k - 1)[i] * h, np.eye(k - 1)[j] * h
            hess[i, j] = (
                loglik(full(opt.x + ei + ej)) - loglik(full(opt.x + ei - ej))
                - loglik(full(opt.x - ei + ej)) + loglik(full(opt.x - ei - ej))
            ) / (4 * h * h)  # fmt: skip
    cov_free = np.linalg.inv(-hess)
    # b_k = -sum(free): its variance is 1' cov 1.
    jac = np.vstack([np.eye(k - 1), -np.ones(k - 1)])
    cov = jac @ cov_free @ jac.T
    return b, np.sqrt(np.diag(cov)), -opt.fun


def test_scattered_missing_answers_give_the_exact_cml_estimates_and_ses():
    b = _difficulties(6, 81)
    rng = np.random.default_rng(82)
    x, _ = simulate(400, b, rng)
    x[rng.random(x.shape) < 0.2] = np.nan
    res = calibrate(x)
    ref_b, ref_se, ref_ll = _brute_cml(x)
    assert res.converged
    np.testing.assert_allclose(res.difficulty, ref_b, atol=1e-6)
    np.testing.assert_allclose(res.difficulty_se, ref_se, rtol=2e-3)
    assert res.log_likelihood == pytest.approx(ref_ll, abs=1e-6)


def test_items_of_equal_difficulty_get_the_exact_information():
    # Two identical columns have exactly equal CML difficulties: the information term for
    # that pair cannot come from the quotient formula and must still be right.
    b = _difficulties(5, 83)
    x, _ = simulate(300, b, np.random.default_rng(84))
    x[:, 1] = x[:, 0]
    res = calibrate(x)
    ref_b, ref_se, _ = _brute_cml(x)
    assert res.difficulty[0] == pytest.approx(res.difficulty[1], abs=1e-9)
    np.testing.assert_allclose(res.difficulty, ref_b, atol=1e-6)
    np.testing.assert_allclose(res.difficulty_se, ref_se, rtol=2e-3)


def _esf_by_item(eps: np.ndarray) -> np.ndarray:
    """gamma_0..gamma_k of each row of eps (0 = item not answered): plain summation."""
    g = np.zeros((eps.shape[0], eps.shape[1] + 1))
    g[:, 0] = 1.0
    for j in range(eps.shape[1]):
        g[:, 1:] = g[:, 1:] + eps[:, j : j + 1] * g[:, :-1]
    return g


def test_many_skipped_answers_solve_the_cml_score_equations(monkeypatch):
    # 8,000 students x 30 items with 5% of answers missing at random: some 6,000 distinct
    # (answered items, score) rows. At the CML maximum the expected number right of every
    # item, given each student's score and answered items, equals the observed number.
    from backend.exams import rasch

    # Start, as with 100,000 students, from a fit to a sample of the students.
    monkeypatch.setattr(rasch, "WARM_ROWS", 1000)
    b = _difficulties(30, 85)
    rng = np.random.default_rng(86)
    x, _ = simulate(8_000, b, rng)
    x[rng.random(x.shape) < 0.05] = np.nan
    res = calibrate(x, tests=False)
    assert res.converged and np.isfinite(res.difficulty).all()
    present = ~np.isnan(x)
    r = np.nansum(x, 1).astype(int)
    mixed = (r > 0) & (r < present.sum(1))
    eps = np.where(present[mixed], np.exp(-res.difficulty), 0.0)
    rv = r[mixed]
    rows = np.arange(len(rv))
    gamma_r = _esf_by_item(eps)[rows, rv]
    expected = np.zeros(30)
    for i in range(30):
        without = eps.copy()
        without[:, i] = 0.0
        expected[i] = np.sum(eps[:, i] * _esf_by_item(without)[rows, rv - 1] / gamma_r)
    observed = np.nansum(x[mixed], 0)
    np.testing.assert_allclose(expected, observed, atol=1e-3)
    # Accuracy is what the standard errors promise.
    assert _rmse(res.difficulty, b) < 1.4 * float(np.sqrt(np.mean(res.difficulty_se**2)))


def test_disconnected_design_is_refused_naming_the_items_not_linked():
    b = _difficulties(10, 87)
    x, _ = simulate(600, b, np.random.default_rng(88))
    x[:300, 6:] = np.nan  # group A answered items 0-5
    x[300:, :6] = np.nan  # group B answered items 6-9
    names = [f"Q{i + 1}" for i in range(10)]
    with pytest.raises(ValueError, match="disconnected design") as info:
        calibrate(x, labels=names)
    assert info.value.items == [6, 7, 8, 9]
    assert "Q7, Q8, Q9, Q10" in str(info.value)
    # One common item links the groups: then it calibrates.
    x2, _ = simulate(600, b, np.random.default_rng(88))
    x2[:300, 6:] = np.nan
    x2[300:, :5] = np.nan
    assert np.isfinite(calibrate(x2).difficulty).all()


def test_item_right_for_every_non_extreme_student_is_excluded_with_a_reason():
    b = _difficulties(8, 89)
    x, _ = simulate(500, b, np.random.default_rng(90))
    others = np.delete(x, 3, axis=1).sum(1)
    x[:, 3] = (others > 0).astype(float)  # wrong only for students who got all else wrong
    assert 0 < x[:, 3].sum() < 500  # so "everyone right" does not catch it
    res = calibrate(x)
    assert res.excluded == {3: "right for every non-extreme"}
    assert np.isnan(res.difficulty[3])
    assert (res.difficulty_se[np.arange(8) != 3] < 0.5).all()
    # The others are the CML estimates of the data without that item.
    ref_b, _, _ = _brute_cml(np.delete(x, 3, axis=1))
    np.testing.assert_allclose(np.delete(res.difficulty, 3), ref_b, atol=1e-6)


def test_items_infinitely_easier_as_a_group_are_refused_in_words():
    # Items 0 and 1 are each got wrong by someone with a mixed score, but only when the other
    # items were all wrong too: Fischer's condition fails for the pair, estimates are -inf.
    x = np.array([[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0],
                  [1, 1, 1, 1], [0, 0, 0, 0]] * 5, dtype=float)  # fmt: skip
    with pytest.raises(ValueError, match="infinite") as info:
        calibrate(x)
    assert info.value.items == [0, 1]


def test_two_students_get_a_message_not_singular_matrix():
    x = np.array([[0, 0, 0], [0, 1, 1]], dtype=float)
    with pytest.raises(ValueError, match="fewer than two items can be calibrated") as info:
        calibrate(x)
    assert "right for every non-extreme" in str(info.value)
    with pytest.raises(ValueError, match="no student has a mixed score"):
        calibrate(np.array([[1, 1, 1], [0, 0, 0]], dtype=float))


def test_a_singular_information_matrix_is_explained():
    from backend.exams.rasch import RaschDataError, _constrained_inverse

    with pytest.raises(RaschDataError, match="information matrix is singular"):
        _constrained_inverse(np.zeros((3, 3)), [0, 1, 2])


def _wle_reference(b: np.ndarray, r: int) -> float:
    """Warm's WLE for raw score r on items b: the root of r - sum P + J / (2 I)."""
    from scipy.optimize import brentq

    def f(t):
        p = 1 / (1 + np.exp(-(t - b)))
        w = p * (1 - p)
        return r - p.sum() + (w * (1 - 2 * p)).sum() / (2 * w.sum())

    return brentq(f, -20, 20, xtol=1e-12)


def test_fit_statistics_leave_out_extreme_scores_and_standardise():
    x = _lsat6()
    res = calibrate(x)
    b = res.difficulty
    r = x.sum(1).astype(int)
    keep = (r > 0) & (r < 5)
    theta = np.array([_wle_reference(b, s) for s in r[keep]])
    p = 1 / (1 + np.exp(-(theta[:, None] - b[None, :])))
    w = p * (1 - p)
    resid2 = (x[keep] - p) ** 2
    outfit = (resid2 / w).mean(0)
    infit = resid2.sum(0) / w.sum(0)
    np.testing.assert_allclose(res.outfit, outfit, atol=1e-6)
    np.testing.assert_allclose(res.infit, infit, atol=1e-6)
    assert res.n_extreme == int((~keep).sum()) == 301
    # Without the 301 extreme scores LSAT-6's outfit is .71-.92, not deflated below .7.
    assert (res.outfit > 0.71).all()
    # ZSTD by Wilson-Hilferty, with the model variances of the mean-squares (Wright & Masters
    # 1982): C = E(x - p)^4.
    c = p * (1 - p) ** 4 + (1 - p) * p**4
    n = keep.sum()
    q_out = np.sqrt((c / w**2).sum(0) / n**2 - 1 / n)
    q_in = np.sqrt((c - w**2).sum(0) / w.sum(0) ** 2)
    z_out = (np.cbrt(outfit) - 1) * 3 / q_out + q_out / 3
    z_in = (np.cbrt(infit) - 1) * 3 / q_in + q_in / 3
    np.testing.assert_allclose(res.outfit_zstd, z_out, atol=1e-5)
    np.testing.assert_allclose(res.infit_zstd, z_in, atol=1e-5)


def test_kr20_beside_separation_reliability():
    x = _lsat6()
    res = calibrate(x)
    k = 5
    p = x.mean(0)
    kr20 = k / (k - 1) * (1 - (p * (1 - p)).sum() / x.sum(1).var())
    assert kr20 == pytest.approx(0.295, abs=5e-4)  # the figure quoted for LSAT-6
    assert res.kr20 == pytest.approx(kr20, abs=1e-12)
    assert res.reliability < 0.05  # separation reliability is ~0 on five easy items


def test_alpha_with_skipped_answers_uses_pairwise_covariances():
    b = _difficulties(8, 91)
    rng = np.random.default_rng(92)
    x, _ = simulate(700, b, rng)
    x[rng.random(x.shape) < 0.1] = np.nan
    res = calibrate(x, tests=False)
    k = 8
    cov = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            both = ~np.isnan(x[:, i]) & ~np.isnan(x[:, j])
            cov[i, j] = np.cov(x[both, i], x[both, j], ddof=0)[0, 1]
    alpha = k / (k - 1) * (1 - np.trace(cov) / cov.sum())
    assert res.kr20 == pytest.approx(alpha, abs=1e-12)


def test_andersen_lr_and_wald_tests_match_brute_force():
    from scipy.stats import chi2, norm

    b = _difficulties(5, 93)
    rng = np.random.default_rng(94)
    x, _ = simulate(500, b, rng)
    x[rng.random(x.shape) < 0.1] = np.nan
    res = calibrate(x)
    raw = np.nansum(x, 1)
    median = np.median(raw)
    low, high = x[raw <= median], x[raw > median]
    _, _, ll_all = _brute_cml(x)
    b_low, se_low, ll_low = _brute_cml(low)
    b_high, se_high, ll_high = _brute_cml(high)
    lr = 2 * (ll_low + ll_high - ll_all)
    t = res.andersen
    assert t.median == median and not t.unavailable and t.df == 4
    assert t.lr == pytest.approx(lr, abs=1e-5)
    assert t.p == pytest.approx(chi2.sf(lr, 4), abs=1e-7)
    z = (b_high - b_low) / np.sqrt(se_low**2 + se_high**2)
    np.testing.assert_allclose(res.wald_z, z, atol=2e-3)
    np.testing.assert_allclose(res.wald_p, 2 * norm.sf(np.abs(z)), atol=1e-3)


def test_chi_square_tail_matches_scipy():
    from scipy.stats import chi2

    from backend.exams.rasch import chi2_sf

    for df in (1, 2, 4, 9, 54, 200):
        for q in (0.001, 0.05, 0.5, 0.95, 0.999):
            xq = float(chi2.ppf(q, df))
            assert chi2_sf(xq, df) == pytest.approx(1 - q, rel=1e-9, abs=1e-13)
