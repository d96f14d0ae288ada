"""Rasch (1PL) calibration: item difficulties by conditional maximum likelihood (CML),
person abilities by Warm's weighted likelihood (WLE). numpy only; no Django.

Why CML and not MML/EM. CML conditions the person parameters out through the raw score,
so item estimates are consistent without any assumption about the ability distribution (MML
must assume one, usually normal, and is biased when it is wrong, e.g. a skewed exam cohort)
and without JML's bias of order 1/items. Its cost does not grow with the number of students:
everything is computed per (missingness pattern, raw score) group, so 100,000 x 55 is a
histogram of raw scores plus a few Newton steps on 55 parameters: milliseconds of
elimination, with the N x items work (fit statistics) done once, vectorised. MML needs
N x quadrature x items per EM iteration, which is what the memory bound forbids.

The elementary symmetric functions are computed with the summation algorithm
(gamma_r <- gamma_r + eps_i * gamma_{r-1}, one item at a time): only additions of positive
terms, so it is numerically stable, unlike the difference formulas for leave-one-out terms.
Leave-one-out (and leave-two-out, for the information matrix) functions are recomputed by the
same recursion with the item's weight set to zero, vectorised over the left-out item.

Missing responses (not reached, not shown) are handled exactly: persons are grouped by which
items they answered, and each group's conditional likelihood uses only those items.

Identification: mean item difficulty 0. Items everyone got right (or wrong) carry no
information under CML: they are reported in ``excluded`` and get NaN estimates.

Scaled scores: ``scaled = scale_mean + scale_sd * ability`` (settings RASCH_SCALE_MEAN and
RASCH_SCALE_SD, default 500 and 100), so a student one logit above the mean item scores 600.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_ITER = 50
TOL = 1e-6


@dataclass
class RaschResult:
    difficulty: np.ndarray  # per item, NaN for excluded items
    difficulty_se: np.ndarray
    ability: np.ndarray  # per person (WLE), NaN for persons with no responses
    ability_se: np.ndarray
    infit: np.ndarray  # per item mean-squares
    outfit: np.ndarray
    point_measure: np.ndarray  # per item correlation of response and ability
    reliability: float  # person separation reliability
    converged: bool
    iterations: int
    method: str = "CML"
    excluded: dict[int, str] = field(default_factory=dict)  # item index -> reason
    n_persons: int = 0
    n_items: int = 0
    log_likelihood: float = float("nan")


def _esf(eps: np.ndarray, max_r: int) -> np.ndarray:
    """gamma_0..gamma_max_r of ``eps`` along the last axis (batched over leading axes)."""
    g = np.zeros((*eps.shape[:-1], max_r + 1))
    g[..., 0] = 1.0
    for k in range(eps.shape[-1]):
        e = eps[..., k : k + 1]
        g[..., 1:] = g[..., 1:] + e * g[..., :-1]
    return g


def _loo(eps: np.ndarray, max_r: int) -> np.ndarray:
    """Leave-one-out functions: row i is gamma of eps without item i."""
    k = eps.shape[-1]
    batch = np.broadcast_to(eps, (*eps.shape[:-1], k, k)).copy()
    idx = np.arange(k)
    batch[..., idx, idx] = 0.0
    return _esf(batch, max_r)


def _loo2(eps: np.ndarray, max_r: int) -> np.ndarray:
    """Leave-two-out functions: [i, j] is gamma of eps without items i and j (all pairs at
    once: k^3 numbers, a few hundred kilobytes for a 55-item exam)."""
    k = eps.shape[-1]
    batch = np.broadcast_to(eps, (k, k, k)).copy()
    idx = np.arange(k)
    batch[idx, :, idx] = 0.0
    batch[:, idx, idx] = 0.0
    return _esf(batch, max_r)


class _Group:
    """Persons sharing one set of answered items: the counts of each raw score."""

    def __init__(self, items: np.ndarray, score_counts: np.ndarray):
        self.items = items
        self.counts = score_counts  # length k+1
        self.k = len(items)


def _patterns(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a boolean matrix and each row's pattern index (rows packed to bytes:
    sorting 100,000 short byte strings is far cheaper than a row-wise unique)."""
    if mask.all():
        return mask[:1], np.zeros(mask.shape[0], dtype=np.intp)
    packed = np.ascontiguousarray(np.packbits(mask, axis=1))
    void = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
    return mask[first], inverse.reshape(-1)


def _groups(
    keys: np.ndarray, inverse: np.ndarray, scores: np.ndarray, usable: np.ndarray
) -> list[_Group]:
    groups = []
    item_ids = np.flatnonzero(usable)
    width = len(item_ids) + 1
    counts = np.bincount(inverse * width + scores, minlength=len(keys) * width)
    counts = counts.reshape(len(keys), width)
    for g, key in enumerate(keys):
        items = item_ids[key]
        if len(items) == 0:
            continue
        groups.append(_Group(items, counts[g, : len(items) + 1]))
    return groups


def _cml_step(b: np.ndarray, groups: list[_Group], totals: np.ndarray, hessian: bool):
    """Gradient, Fisher information and log-likelihood of the conditional likelihood."""
    n = len(b)
    grad = -totals.astype(float).copy()
    info = np.zeros((n, n)) if hessian else None
    loglik = -float(totals @ np.nan_to_num(b))
    for grp in groups:
        items, k = grp.items, grp.k
        # Centre within the group: gamma_r scales by exp(-r c), which cancels in every ratio.
        shift = b[items].mean()
        eps = np.exp(-(b[items] - shift))
        gamma = _esf(eps, k)
        loo = _loo(eps, k)  # (k, k+1)
        r = np.arange(k + 1)
        valid = grp.counts > 0
        counts = grp.counts[valid]
        rv = r[valid]
        loglik -= float(counts @ (np.log(gamma[rv]) - rv * shift))
        # P_i(r) = eps_i gamma^{(i)}_{r-1} / gamma_r
        prev = np.zeros((k, len(rv)))
        pos = rv > 0
        prev[:, pos] = loo[:, rv[pos] - 1]
        p = eps[:, None] * prev / gamma[rv][None, :]
        grad[items] += p @ counts
        if hessian:
            # P_ij(r) = eps_i eps_j gamma^{(i,j)}_{r-2} / gamma_r, from leave-two-out ESFs.
            pij = np.zeros((k, k, len(rv)))
            two = rv > 1
            if two.any():
                l2 = _loo2(eps, k)  # [i, j]: without items i and j
                pij[:, :, two] = (
                    (eps[:, None] * eps[None, :])[:, :, None]
                    * l2[:, :, rv[two] - 2]
                    / gamma[rv[two]][None, None, :]
                )
            idx = np.arange(k)
            pij[idx, idx, :] = p
            cov = pij - p[:, None, :] * p[None, :, :]
            info[np.ix_(items, items)] += cov @ counts
    return grad, info, loglik


def _constrained_inverse(info: np.ndarray) -> np.ndarray:
    """Covariance of the estimates under mean(b) = 0. The information is singular along
    u = 1/sqrt(k): since info u = 0, inv(info + u u') = pinv(info) + u u', exactly."""
    k = info.shape[0]
    uu = np.full((k, k), 1.0 / k)
    return np.linalg.inv(info + uu) - uu


def _wle(b: np.ndarray, k_scores: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warm's WLE for each raw score 0..k on ``items``: solves
    r - sum P + J / (2 I) = 0 by safeguarded Newton (bisection fallback)."""
    bb = b[items]
    r = k_scores.astype(float)
    lo = np.full_like(r, -15.0)
    hi = np.full_like(r, 15.0)
    theta = np.log((r + 0.5) / (len(items) - r + 0.5)) + bb.mean()

    def f(t):
        pr = 1.0 / (1.0 + np.exp(-(t[:, None] - bb[None, :])))
        w = pr * (1 - pr)
        info = w.sum(1)
        j = (w * (1 - 2 * pr)).sum(1)
        val = r - pr.sum(1) + j / (2 * info)
        # derivative of val; the J/2I term's derivative is small: use -I (a quasi-Newton step)
        return val, info

    for _ in range(100):
        val, info = f(theta)
        lo = np.where(val > 0, theta, lo)
        hi = np.where(val <= 0, theta, hi)
        step = val / info
        new = theta + step
        outside = (new <= lo) | (new >= hi)
        new = np.where(outside, (lo + hi) / 2, new)
        if np.max(np.abs(new - theta)) < 1e-9:
            theta = new
            break
        theta = new
    _, info = f(theta)
    return theta, 1.0 / np.sqrt(info)


def calibrate(responses: np.ndarray, max_iter: int = MAX_ITER, tol: float = TOL) -> RaschResult:
    """Calibrate a persons x items matrix of 0/1 (NaN = not answered)."""
    x = np.asarray(responses, dtype=float)
    if x.ndim != 2:
        raise ValueError("responses must be a 2-D persons x items matrix")
    n_persons, n_items = x.shape
    present = ~np.isnan(x)
    bad = present & (x != 0) & (x != 1)
    if bad.any():
        raise ValueError("responses must be 0, 1 or NaN")
    x0 = np.where(present, x, 0.0)

    excluded: dict[int, str] = {}
    usable = present.any(0)
    for i in np.flatnonzero(~usable):
        excluded[int(i)] = "no responses"
    # Extreme items carry no information; excluding one changes persons' raw scores, which
    # can make another item extreme within a group, so iterate to a fixed point.
    while True:
        n_resp = present[:, usable].sum(0)
        n_right = x0[:, usable].sum(0)
        ids = np.flatnonzero(usable)
        changed = False
        for i, nr, nc in zip(ids, n_resp, n_right, strict=True):
            if nc == 0:
                excluded[int(i)] = "everyone wrong"
            elif nc == nr:
                excluded[int(i)] = "everyone right"
            else:
                continue
            usable[i] = False
            changed = True
        if not changed:
            break
    if usable.sum() < 2:
        raise ValueError(
            "fewer than two items with both right and wrong answers: nothing to calibrate"
        )

    scores = (x0 * usable).sum(1).astype(int)
    answered = (present & usable).sum(1)
    keys, inverse = _patterns(present[:, usable])
    groups = _groups(keys, inverse, scores, usable)
    idx = np.flatnonzero(usable)
    pos = {int(i): j for j, i in enumerate(idx)}

    # Work in the reduced item space.
    red_groups = [_Group(np.array([pos[int(i)] for i in g.items]), g.counts) for g in groups]
    # Persons with zero or perfect scores in their group add nothing to CML; they are kept
    # for the WLE abilities below.
    for g in red_groups:
        g.counts = g.counts.copy()
        g.counts[0] = 0
        g.counts[-1] = 0
    # Item totals over persons with non-extreme scores only.
    non_extreme = (scores > 0) & (scores < answered)
    totals = (x0[non_extreme][:, idx]).sum(0)

    p_right = np.clip(totals / np.maximum((present[non_extreme][:, idx]).sum(0), 1), 1e-3, 1 - 1e-3)
    b = -np.log(p_right / (1 - p_right))
    b -= b.mean()
    converged = False
    iterations = 0
    loglik = float("nan")
    # With many answered-item patterns the information matrix is the costly part (k^3 per
    # pattern); it changes little near the optimum, so it is then reused between steps.
    refresh_info = len(red_groups) <= 64
    info = None
    for iteration in range(1, max_iter + 1):
        iterations = iteration
        need = refresh_info or info is None
        grad, new_info, loglik = _cml_step(b, red_groups, totals, hessian=need)
        if need:
            info = new_info
        step = _constrained_inverse(info) @ grad
        # Damp huge steps on pathological data; Newton is quadratic once close.
        big = np.max(np.abs(step))
        if big > 2.0:
            step *= 2.0 / big
        b = b + step  # grad is d loglik / d b and info its negative Hessian: ascend
        b -= b.mean()
        if big < tol:
            converged = True
            break
    _, info, loglik = _cml_step(b, red_groups, totals, hessian=True)
    cov = _constrained_inverse(info)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))

    difficulty = np.full(n_items, np.nan)
    difficulty_se = np.full(n_items, np.nan)
    difficulty[idx] = b
    difficulty_se[idx] = se

    # Abilities: one WLE per (group, raw score), mapped back to persons.
    ability = np.full(n_persons, np.nan)
    ability_se = np.full(n_persons, np.nan)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    for g, key in enumerate(keys):
        members = order[bounds[g] : bounds[g + 1]]
        if not key.any():
            continue
        items = idx[key]
        theta, tse = _wle(difficulty, np.arange(len(items) + 1), items)
        ability[members] = theta[scores[members]]
        ability_se[members] = tse[scores[members]]

    infit, outfit, pm = _fit(x0, present, usable, difficulty, ability)
    finite = ~np.isnan(ability)
    var = float(np.var(ability[finite])) if finite.sum() > 1 else float("nan")
    err = float(np.mean(ability_se[finite] ** 2)) if finite.any() else float("nan")
    reliability = max(0.0, (var - err) / var) if var and var > 0 else float("nan")
    return RaschResult(
        difficulty=difficulty,
        difficulty_se=difficulty_se,
        ability=ability,
        ability_se=ability_se,
        infit=infit,
        outfit=outfit,
        point_measure=pm,
        reliability=reliability,
        converged=converged,
        iterations=iterations,
        excluded=excluded,
        n_persons=int(n_persons),
        n_items=int(n_items),
        log_likelihood=loglik,
    )


def _fit(x0, present, usable, difficulty, ability):
    n_items = x0.shape[1]
    infit = np.full(n_items, np.nan)
    outfit = np.full(n_items, np.nan)
    pm = np.full(n_items, np.nan)
    ok_person = ~np.isnan(ability)
    th = np.where(ok_person, ability, 0.0)
    for i in np.flatnonzero(usable):
        rows = present[:, i] & ok_person
        if rows.sum() < 2:
            continue
        xi = x0[rows, i]
        t = th[rows]
        p = 1.0 / (1.0 + np.exp(-(t - difficulty[i])))
        w = p * (1 - p)
        resid = xi - p
        outfit[i] = float(np.mean(resid**2 / w))
        infit[i] = float(np.sum(resid**2) / np.sum(w))
        if xi.std() > 0 and t.std() > 0:
            pm[i] = float(np.corrcoef(xi, t)[0, 1])
    return infit, outfit, pm


def scaled_scores(ability: np.ndarray, mean: float = 500.0, sd: float = 100.0) -> np.ndarray:
    """The documented linear transformation of abilities (logits) to the reporting scale."""
    return mean + sd * np.asarray(ability, dtype=float)


def simulate(
    n_persons: int, difficulty: np.ndarray, rng: np.random.Generator, ability=None
) -> tuple[np.ndarray, np.ndarray]:
    """Responses under the Rasch model (for tests and benchmarks)."""
    theta = rng.standard_normal(n_persons) if ability is None else np.asarray(ability)
    p = 1.0 / (1.0 + np.exp(-(theta[:, None] - difficulty[None, :])))
    return (rng.random(p.shape) < p).astype(float), theta
