"""Rasch (1PL) calibration: item difficulties by conditional maximum likelihood (CML),
person abilities by Warm's weighted likelihood (WLE), the model checks eRm users expect
(infit/outfit with ZSTD, Andersen's likelihood-ratio test, per-item Wald tests) and KR-20.
numpy only; no Django.

Why CML and not MML/EM. CML conditions the person parameters out through the raw score,
so item estimates are consistent without any assumption about the ability distribution (MML
must assume one, usually normal, and is biased when it is wrong, e.g. a skewed exam cohort)
and without JML's bias of order 1/items. Its cost grows with the number of distinct
(answered items, raw score) rows, not with students: complete data is one histogram of raw
scores; 100,000 students with 5% of answers skipped at random are some 75,000 rows.

How the conditional likelihood is computed. For each row (one set of answered items and a
raw score r) we need gamma_r, the elementary symmetric function of eps_i = exp(-b_i) over
the answered items, and for every item the leave-one-out gamma^(i)_{r-1}, which gives
P_i(r) = eps_i gamma^(i)_{r-1} / gamma_r, the chance item i is right given the score.
gamma is built by the summation algorithm (gamma_s <- gamma_s + eps_j gamma_{s-1}, item by
item: only additions of positive terms, so numerically stable, unlike the difference
formulas for leave-one-out terms), and all leave-one-out terms at once by running the same
recursion backwards (reverse-mode differentiation: d gamma_r / d eps_i = gamma^(i)_{r-1}),
in O(items x r) per row, vectorised over every row sharing a score. Rows with r above half
their items are solved as their complement (wrong answers, 1/eps), so r <= items/2.

The information matrix is exact and costs two matrix products: for two different items,
P_ij(r) = (eps_i P_j(r) - eps_j P_i(r)) / (eps_i - eps_j) (from gamma^(j) - gamma^(i) =
(eps_i - eps_j) gamma^(ij)), so sum_rows n P_ij needs only the P vectors. Pairs of items with
(almost) equal difficulties, where that quotient cancels, get their term from leave-two-out
functions instead. Newton's method with this matrix converges quadratically: four passes
over the rows from the log-odds start, three when many rows make it worth solving a sample
of students first; the standard errors come from the information at the estimates.

Missing responses (not reached, not shown, skipped) are handled exactly: each row's
conditional likelihood uses only the items answered in it.

What cannot be estimated is refused or excluded, never returned as a wrong number:
- items nobody answered, everyone got right (or wrong), or that every student with a mixed
  score got right (or wrong) are excluded with the reason (their CML estimate is infinite);
- a design whose items fall into groups never answered together by a student with a mixed
  score (disconnected) is refused, naming the items not linked; so is any other data where
  Fischer's condition for finite estimates fails.

Identification: mean item difficulty 0 over the calibrated items.

Fit. Infit and outfit mean-squares (Wright & Masters 1982) leave out persons with extreme
scores (all right or all wrong on the items they answered), as Winsteps and eRm do: their
WLE abilities are extrapolations, and their near-zero residuals deflate outfit. Each
mean-square is standardised with the Wilson-Hilferty cube-root transformation (ZSTD, as in
Winsteps), so a significance flag means the same at any sample size (with abilities estimated
from the same answers, fitting items' ZSTD centre a little below 0). Andersen's (1973)
likelihood-ratio test compares the conditional likelihood of the whole sample with that of
the two halves split at the median raw score (eRm's ``LRtest(splitcr = "median")``); the
per-item Wald tests compare each item's difficulty between the halves (eRm's ``Waldtest``).

Reliability: person separation reliability (Winsteps' "model" reliability: true variance of
the WLE abilities over their observed variance) and KR-20 (Cronbach's alpha for 0/1 items;
with skipped answers, alpha from pairwise covariances). On short tests separation reliability
is often near 0 where KR-20 is not; both are reported.

Scaled scores: ``scaled = scale_mean + scale_sd * ability`` (settings RASCH_SCALE_MEAN and
RASCH_SCALE_SD, default 500 and 100), so a student one logit above the mean item scores 600.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_ITER = 50
# Newton stops after a step no larger than TOL logits: the error left after that step is of
# order TOL squared (Newton converges quadratically; measured: error <= 0.4 step^2), 1e-8.
TOL = 2e-4
# After a last step this small the information where it started is the information at the
# estimates (standard errors change by ~1e-9): no extra pass for it.
FINAL_STEP = 1e-6
# The halves of Andersen's test stop earlier: an error of 1e-6 logits changes no test.
TEST_TOL = 1e-3
# With more rows than 4x this, Newton first runs on a sample of about this many rows.
WARM_ROWS = 10_000
# The sample's own estimates are off the whole's by its sampling error (~0.05 logits at
# that size): solving it closer than this buys nothing.
WARM_TOL = 0.1
# Pairs of items closer than this (logits) get their information term from leave-two-out
# functions: the quotient formula would lose about 1e-16 / TIE of its precision.
TIE = 1e-5
# Elements per work array in the row recursions (8 bytes each: 8 MB).
BUDGET = 1_000_000
# Persons per block in the vectorised fit statistics.
BLOCK = 20_000


class RaschDataError(ValueError):
    """The responses cannot identify the model. ``items``: the column indices concerned."""

    def __init__(self, message: str, items=()):
        super().__init__(message)
        self.items = [int(i) for i in items]


@dataclass
class AndersenTest:
    """Andersen's LR test, persons split at the median raw score (eRm's default)."""

    lr: float | None  # 2 (logL_low + logL_high - logL_all); None when the test is unavailable
    df: int | None
    p: float | None
    median: float | None  # low group: raw score <= median; high group: above it
    n_low: int = 0  # persons in each half with a mixed score (the others carry no information)
    n_high: int = 0
    dropped: dict[int, str] = field(default_factory=dict)  # items left out of the test, why
    unavailable: str = ""  # why there is no test, if there is none


@dataclass
class RaschResult:
    difficulty: np.ndarray  # per item, NaN for excluded items
    difficulty_se: np.ndarray
    ability: np.ndarray  # per person (WLE), NaN for persons with no responses
    ability_se: np.ndarray
    infit: np.ndarray  # per item mean-squares, persons with extreme scores left out
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
    infit_zstd: np.ndarray | None = None  # Wilson-Hilferty standardised mean-squares
    outfit_zstd: np.ndarray | None = None
    kr20: float = float("nan")  # KR-20 (Cronbach's alpha)
    n_extreme: int = 0  # persons with extreme scores, left out of infit/outfit
    andersen: AndersenTest | None = None
    wald_z: np.ndarray | None = None  # per item (high - low) / SE; NaN where not tested
    wald_p: np.ndarray | None = None


@dataclass
class _Fit:
    items: np.ndarray  # column indices estimated
    b: np.ndarray  # their difficulties, mean 0
    se: np.ndarray
    loglik: float
    excluded: dict[int, str]
    converged: bool
    iterations: int
    rows: tuple = ()  # (mask, score, count, item totals, answered counts) of the rows
    at: np.ndarray | None = None  # the difficulties of the last pass over the rows ...
    probs: np.ndarray | None = None  # ... its P vectors and log gamma
    log_gamma: np.ndarray | None = None


def _names(ids, labels) -> str:
    ids = [int(i) for i in ids]
    shown = [labels[i] if labels is not None else f"#{i}" for i in ids[:12]]
    more = f" and {len(ids) - 12} more" if len(ids) > 12 else ""
    return ", ".join(str(s) for s in shown) + more


# --- Which items can be estimated -------------------------------------------------------


def _screen(right, wrong, usable, excluded, labels) -> np.ndarray:
    """Exclude items that carry no information or whose estimate is infinite, to a fixed
    point (excluding one changes raw scores, which can make another extreme)."""
    usable = usable.copy()
    while True:
        ids = np.flatnonzero(usable)
        if len(ids) < 2:
            break
        r_items, w_items = right[:, ids], wrong[:, ids]
        mixed = r_items.any(1) & w_items.any(1)
        if not mixed.any():
            raise RaschDataError(
                "no student has a mixed score (some right, some wrong) on the items with both "
                "right and wrong answers: every score is all-right or all-wrong, which says "
                "nothing about how items differ",
                ids,
            )
        n_right, n_wrong = r_items.sum(0), w_items.sum(0)
        m_right, m_wrong = r_items[mixed].sum(0), w_items[mixed].sum(0)
        changed = False
        for j, i in enumerate(ids):
            if n_wrong[j] == 0:
                why = "everyone right"
            elif n_right[j] == 0:
                why = "everyone wrong"
            elif m_right[j] + m_wrong[j] == 0:
                why = "only extreme scorers answered"
            elif m_wrong[j] == 0:
                why = "right for every non-extreme"
            elif m_right[j] == 0:
                why = "wrong for every non-extreme"
            else:
                continue
            excluded[int(i)] = why
            usable[i] = False
            changed = True
        if not changed:
            break
    if usable.sum() < 2:
        why = "; ".join(f"{_names([i], labels)} {r}" for i, r in sorted(excluded.items()))
        raise RaschDataError(
            "fewer than two items can be calibrated, nothing to estimate: an item needs right "
            "and wrong answers from students with mixed scores" + (f" ({why})" if why else ""),
            np.flatnonzero(usable),
        )
    return usable


def _closure(adj: np.ndarray) -> np.ndarray:
    """Reachability (transitive closure with the diagonal) of a boolean adjacency matrix."""
    reach = adj | np.eye(len(adj), dtype=bool)
    while True:
        f = reach.astype(np.float64)
        nxt = (f @ f) > 0
        if (nxt == reach).all():
            return reach
        reach = nxt


def _check_links(right, wrong, ids, labels) -> None:
    """Refuse data whose CML estimates are not unique or not finite.

    Students with a mixed score link the items they answered; items in groups never answered
    together are on separate scales (a disconnected design). Finite estimates further need
    Fischer's (1981) condition: the digraph "some student with a mixed score got i right and
    j wrong" strongly connected.
    """
    r = right[:, ids]
    w = wrong[:, ids]
    mixed = r.any(1) & w.any(1)
    # float32 counts are exact to 2^24 and only their sign is used.
    rf = r[mixed].astype(np.float32)
    wf = w[mixed].astype(np.float32)
    answered = rf + wf
    together = _closure((answered.T @ answered) > 0)
    comp_of = np.argmax(together, axis=1)  # smallest item index in each item's component
    comps = np.unique(comp_of)
    if len(comps) > 1:
        sizes = [(int((comp_of == c).sum()), int(c)) for c in comps]
        biggest = max(sizes)[1]
        main = np.flatnonzero(comp_of == biggest)
        others = np.flatnonzero(comp_of != biggest)
        raise RaschDataError(
            f"disconnected design: items {_names(ids[others], labels)} were never answered "
            f"together with items {_names(ids[main], labels)} by a student with a mixed "
            f"score, so the groups' difficulties are on separate scales; link them with "
            f"common items or calibrate them separately",
            ids[others],
        )
    reach = _closure((rf.T @ wf) > 0)
    if not reach.all():
        # A source component: items no other item reaches, i.e. nobody with a mixed score got
        # one of them wrong while getting an item outside them right.
        unreached = ~reach
        src = np.flatnonzero(unreached.any(0))  # items some other item cannot reach
        comp = reach & reach.T
        heads = [i for i in src if not (reach[:, i] & ~comp[i]).any()]
        group = np.flatnonzero(comp[heads[0]]) if heads else src
        raise RaschDataError(
            f"the estimates would be infinite: no student with a mixed score got one of items "
            f"{_names(ids[group], labels)} wrong while getting one of the other items right "
            f"(Fischer's condition), so these items are infinitely easier than the rest; add "
            f"responses or leave them out",
            ids[group],
        )


# --- The conditional likelihood ----------------------------------------------------------


def _unique_rows(mask: np.ndarray, scores: np.ndarray):
    """Distinct (answered items, score) rows: keys, counts, and each person's row index
    (rows packed to bytes: sorting short byte strings beats a row-wise unique)."""
    packed = np.packbits(mask, axis=1)
    sc = scores.astype("<u2").view(np.uint8).reshape(len(scores), 2)
    key = np.ascontiguousarray(np.concatenate([packed, sc], axis=1))
    void = key.view(np.dtype((np.void, key.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(
        void, return_index=True, return_inverse=True, return_counts=True
    )
    return first, inverse.reshape(-1), counts


def _row_probs(b: np.ndarray, mask: np.ndarray, r: np.ndarray):
    """For each row (answered items ``mask``, raw score ``r``, 0 < r < answered): P_i(r) for
    every item (0 where not answered) and log gamma_r, by forward and reverse summation."""
    n_rows, k = mask.shape
    probs = np.zeros((n_rows, k))
    log_gamma = np.zeros(n_rows)
    n_ans = mask.sum(1)
    flip = 2 * r > n_ans
    w = np.where(flip, n_ans - r, r)  # the effective score after complementing
    order = np.argsort(w, kind="stable")
    bounds = np.searchsorted(w[order], np.arange(k + 2))
    for sc in range(1, k // 2 + 1):
        rows_all = order[bounds[sc] : bounds[sc + 1]]
        chunk = max(16, BUDGET // (k * sc))
        for c0 in range(0, len(rows_all), chunk):
            rows = rows_all[c0 : c0 + chunk]
            m = mask[rows]
            fl = flip[rows]
            mb = (m * b).sum(1)
            shift = mb / n_ans[rows]
            # Centred within the row: gamma_r scales by exp(r c), which cancels in P and is
            # put back in log gamma below.
            arg = np.where(fl[:, None], b[None, :] - shift[:, None], shift[:, None] - b[None, :])
            eps_t = np.ascontiguousarray(np.where(m, np.exp(arg), 0.0).T)  # (k, n)
            n = len(rows)
            # fwd[j]: gamma_0 .. gamma_{sc-1} of the items before j, each step written
            # straight into the next slot.
            # Only entries 0 .. min(j, sc - 1) of fwd[j] are ever written or read.
            fwd = np.empty((k, sc, n))
            fwd[:, 0] = 1.0
            for j in range(k - 1):
                hi = min(j + 1, sc - 1)
                if hi >= 1:
                    nxt = fwd[j + 1, 1 : hi + 1]
                    np.multiply(fwd[j, :hi], eps_t[j], out=nxt)
                    top = min(j, sc - 1)
                    nxt[:top] += fwd[j, 1 : top + 1]
            # Reverse pass: adj holds d gamma_sc / d gamma^(j+1)_s, so that
            # d gamma_sc / d eps_j = sum_s adj_s gamma^(j)_{s-1}.
            adj = np.zeros((sc + 1, n))
            adj[sc] = 1.0
            tmp = np.empty((sc, n))
            d = np.empty((k, n))
            for j in range(k - 1, -1, -1):
                lo, hi = max(1, sc - (k - 1 - j)), min(sc, j + 1)
                d[j] = np.einsum("sn,sn->n", adj[lo : hi + 1], fwd[j, lo - 1 : hi])
                lo2 = max(0, sc - (k - j))
                t = tmp[: sc - lo2]
                np.multiply(adj[lo2 + 1 : sc + 1], eps_t[j], out=t)
                adj[lo2:sc] += t
            ed = eps_t * d
            total = ed.sum(0)  # = sc * gamma_sc
            p_eff = (sc * ed / total).T
            lg_eff = np.log(total / sc)
            probs[rows] = np.where(fl[:, None], m - p_eff, p_eff)
            log_gamma[rows] = np.where(fl, lg_eff + sc * shift - mb, lg_eff - sc * shift)
    return probs, log_gamma


def _pair_term(b, mask, r, counts, i, j) -> float:
    """sum over rows of n P_ij(r) from leave-two-out functions (for near-equal items)."""
    rows = np.flatnonzero(mask[:, i] & mask[:, j] & (r >= 2))
    if not len(rows):
        return 0.0
    m = mask[rows]
    shift = (m * b).sum(1) / m.sum(1)
    eps = np.where(m, np.exp(shift[:, None] - b[None, :]), 0.0)
    k = mask.shape[1]
    g = np.zeros((len(rows), k + 1))
    g2 = np.zeros((len(rows), k + 1))
    g[:, 0] = g2[:, 0] = 1.0
    for t in range(k):
        e = eps[:, t : t + 1]
        g[:, 1:] = g[:, 1:] + e * g[:, :-1]
        if t not in (i, j):
            g2[:, 1:] = g2[:, 1:] + e * g2[:, :-1]
    rr = r[rows]
    ar = np.arange(len(rows))
    val = eps[:, i] * eps[:, j] * g2[ar, rr - 2] / g[ar, rr]
    return float(counts[rows] @ val)


def _information(b, probs, mask, r, counts) -> np.ndarray:
    """Fisher information of the conditional likelihood, exact, from the P vectors."""
    e = np.exp(-(b - b.mean()))
    a = (mask * counts[:, None]).T @ probs  # a[i, j] = sum n 1[i answered] P_j
    q = (probs * counts[:, None]).T @ probs
    den = e[:, None] - e[None, :]
    close = np.abs(b[:, None] - b[None, :]) < TIE
    np.fill_diagonal(close, False)
    with np.errstate(divide="ignore", invalid="ignore"):
        pij = (e[:, None] * a - e[None, :] * a.T) / np.where(close, 1.0, den)
    for i, j in zip(*np.nonzero(np.triu(close)), strict=True):
        pij[i, j] = pij[j, i] = _pair_term(b, mask, r, counts, i, j)
    info = pij - q
    np.fill_diagonal(info, counts @ (probs - probs**2))
    return info


def _constrained_inverse(info: np.ndarray, ids=()) -> np.ndarray:
    """Covariance of the estimates under mean(b) = 0. The information is singular along
    u = 1/sqrt(k): since info u = 0, inv(info + u u') = pinv(info) + u u', exactly."""
    k = info.shape[0]
    uu = np.full((k, k), 1.0 / k)
    try:
        cov = np.linalg.inv(info + uu) - uu
        ok = bool(np.isfinite(cov).all()) and np.linalg.cond(info + uu) < 1e13
    except np.linalg.LinAlgError:
        ok = False
    if not ok:
        raise RaschDataError(
            "the information matrix is singular: the responses do not separate the items' "
            "difficulties (too few students with mixed scores for these items; typically a "
            "handful of students or items linked by a single student)",
            ids,
        )
    return cov


def _rows_of(right, present, ids, persons):
    """The distinct (answered items, raw score) rows of ``persons`` with a mixed score, their
    counts, and the item totals (right answers) over those persons."""
    r_items = right[persons][:, ids]
    m_items = present[persons][:, ids]
    scores = r_items.sum(1)
    mixed = (scores > 0) & (scores < m_items.sum(1))
    first, _, counts = _unique_rows(m_items[mixed], scores[mixed])
    totals = r_items[mixed].sum(0).astype(float)
    n_answered = m_items[mixed].sum(0)
    return m_items[mixed][first], scores[mixed][first], counts.astype(float), totals, n_answered


def _newton(b, rows, max_iter, tol, ids, first=None, final=True):
    """Newton's method on the conditional likelihood from ``b`` (``first``: the rows' P
    vectors and log gamma at ``b``, when already known). Returns the estimates, their
    covariance, the log-likelihood at the estimates, whether it converged, the passes, and
    the last pass's difficulties and P vectors. With ``final``, one more pass at the
    estimates gives the information matrix (standard errors) and log-likelihood there,
    unless the last step was under FINAL_STEP; otherwise they are those of the last step's
    start (at most ``tol`` away)."""
    mask, r, counts, totals, _ = rows
    cov = None
    loglik = float("nan")
    for iteration in range(1, max_iter + 1):
        at = b
        probs, log_gamma = first if iteration == 1 and first else _row_probs(b, mask, r)
        grad = counts @ probs - totals  # d loglik / d b
        loglik = float(-(totals @ b) - counts @ log_gamma)
        cov = _constrained_inverse(_information(b, probs, mask, r, counts), ids)
        step = cov @ grad  # the information is minus the Hessian: ascend
        big = float(np.max(np.abs(step)))
        if big > 2.0:  # damp huge steps on pathological data; Newton is quadratic once close
            step *= 2.0 / big
        b = b + step
        b -= b.mean()
        if big <= tol:
            if final and big > FINAL_STEP:
                probs, log_gamma = _row_probs(b, mask, r)
                loglik = float(-(totals @ b) - counts @ log_gamma)
                cov = _constrained_inverse(_information(b, probs, mask, r, counts), ids)
                return b, cov, loglik, True, iteration, (b, probs, log_gamma)
            # The log-likelihood after a full Newton step, to third order in the step.
            loglik += 0.5 * float(grad @ step)
            return b, cov, loglik, True, iteration, (at, probs, log_gamma)
    return b, cov, loglik, False, max_iter, (at, probs, log_gamma)


def _estimate(
    right, wrong, present, usable, labels, max_iter, tol, start=None, within=None
) -> _Fit:
    """Screen the items, check the design, and solve the CML equations by Newton's method
    (``start``: difficulties for every column, to start from; ``within``: (a fit of a larger
    sample, which of its rows are these persons'), to start from its last pass)."""
    excluded: dict[int, str] = {}
    usable = _screen(right, wrong, usable, excluded, labels)
    ids = np.flatnonzero(usable)
    _check_links(right, wrong, ids, labels)
    everyone = np.arange(right.shape[0])
    passes = 0
    first = None
    if within is not None and np.array_equal(ids, within[0].items):
        # Same items: these persons' rows are a subset of the larger fit's, and its last
        # pass already computed their P vectors (Andersen's halves: one pass saved each).
        big, keep = within
        scores = right[:, ids].sum(1)
        mixed = (scores > 0) & (scores < present[:, ids].sum(1))
        mask, r, counts = big.rows[0][keep], big.rows[1][keep], big.rows[2][keep]
        rows = (mask, r, counts, right[mixed][:, ids].sum(0).astype(float),
                present[mixed][:, ids].sum(0))  # fmt: skip
        b = big.at
        first = (big.probs[keep], big.log_gamma[keep])
    else:
        rows = _rows_of(right, present, ids, everyone)
    if first is not None:
        pass  # start where the larger fit's last pass was
    elif start is not None and np.isfinite(start[ids]).all():
        b = np.asarray(start, dtype=float)[ids]
    else:
        _, _, _, totals, n_answered = rows
        p_right = np.clip(totals / np.maximum(n_answered, 1), 1e-3, 1 - 1e-3)
        b = -np.log(p_right / (1 - p_right))
        if len(rows[0]) > 4 * WARM_ROWS:
            # Many rows (skipped answers): first solve on an evenly spaced sample of students,
            # so that the passes over every row start close (three instead of four).
            sample = everyone[:: len(rows[0]) // WARM_ROWS]
            try:
                warm, _, _, ok, passes, _ = _newton(
                    b - b.mean(),
                    _rows_of(right, present, ids, sample),
                    8,
                    WARM_TOL,
                    ids,
                    final=False,
                )
            except RaschDataError:
                ok = False  # the sample alone does not identify the model
            if ok:
                b = warm
    b, cov, loglik, converged, iterations, (at, probs, log_gamma) = _newton(
        b - b.mean(), rows, max_iter, tol, ids, first, final=within is None
    )
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return _Fit(
        ids, b, se, loglik, excluded, converged, iterations + passes, rows, at, probs, log_gamma
    )


# --- Abilities, fit, reliability ---------------------------------------------------------


def _wle_rows(b: np.ndarray, mask: np.ndarray, r: np.ndarray):
    """Warm's WLE for each row (answered items, raw score): solves
    r - sum P + J / (2 I) = 0 by safeguarded Newton (bisection fallback). A row stops after
    a Newton step under 1e-4 logits (the error left is of order 1e-8); its standard error is
    1 / sqrt(I), I carried to the final theta by its derivative J."""
    n_ans = mask.sum(1)
    rf = r.astype(float)
    k = mask.shape[1]
    if len(r) > 4 * (k + 1) and not mask.all():
        # Many answer patterns: start from the complete test's WLE at the same proportion
        # right, a step or two closer than the log-odds.
        ref, _ = _wle_rows(b, np.ones((k + 1, k), dtype=bool), np.arange(k + 1))
        theta = np.interp(rf * k / n_ans, np.arange(k + 1), ref)
    else:
        theta = np.log((rf + 0.5) / (n_ans - rf + 0.5)) + (mask * b).sum(1) / n_ans
    lo = np.full_like(theta, -15.0)
    hi = np.full_like(theta, 15.0)
    info_at = np.ones_like(theta)
    active = np.arange(len(theta))

    def terms(t, m):
        p = m / (1.0 + np.exp(b[None, :] - t[:, None]))
        w = p * (1 - p)
        return p.sum(1), w.sum(1), (w * (1 - 2 * p)).sum(1), (w * (1 - 6 * w)).sum(1)

    for _ in range(200):
        if not len(active):
            break
        t = theta[active]
        expected, info, j, dj = terms(t, mask[active])
        val = rf[active] - expected + j / (2 * info)
        lo[active] = np.where(val > 0, t, lo[active])
        hi[active] = np.where(val <= 0, t, hi[active])
        # d/dtheta: -I + (J' I - J^2) / (2 I^2), since I' = J and J' = sum W (1 - 6 W).
        slope = -info + (dj * info - j**2) / (2 * info**2)
        newton = slope < 0
        new = t - val / np.where(newton, slope, -info)
        outside = (new <= lo[active]) | (new >= hi[active])
        new = np.where(outside, (lo[active] + hi[active]) / 2, new)
        theta[active] = new
        # The information at the new theta, to second order (dI / dtheta = J).
        info_at[active] = info + j * (new - t)
        step = np.abs(new - t)
        done = (newton & ~outside & (step < 1e-4)) | (step < 1e-9)
        active = active[~done]
    return theta, 1.0 / np.sqrt(info_at)


def _fit_stats(x0, present, ids, b, ability, keep):
    """Infit/outfit mean-squares and their Wilson-Hilferty ZSTD over persons ``keep``,
    and the point-measure correlation over every person with an ability."""
    k = len(ids)
    n = np.zeros(k)
    sum_w = np.zeros(k)
    sum_r2 = np.zeros(k)
    sum_z2 = np.zeros(k)
    sum_cw = np.zeros(k)  # outfit variance: sum C / W^2
    sum_c = np.zeros(k)  # infit variance: sum (C - W^2)
    has = np.flatnonzero(np.isfinite(ability))
    for c0 in range(0, len(has), BLOCK):
        rows = has[c0 : c0 + BLOCK]
        rows = rows[keep[rows]]
        mf = present[rows][:, ids].astype(float)
        x = x0[rows][:, ids]
        p = 1.0 / (1.0 + np.exp(b[None, :] - ability[rows, None]))
        w = p * (1 - p)
        resid2 = (x - p) ** 2 * mf
        n += mf.sum(0)
        sum_w += (w * mf).sum(0)
        sum_r2 += resid2.sum(0)
        sum_z2 += (resid2 / w).sum(0)
        # The 4th central moment C = W (1 - 3 W): outfit's variance uses C / W^2, infit's
        # C - W^2 = W (1 - 4 W).
        sum_cw += ((1 - 3 * w) / w * mf).sum(0)
        sum_c += (w * (1 - 4 * w) * mf).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        outfit = sum_z2 / n
        infit = sum_r2 / sum_w
        q_out = np.sqrt(np.clip(sum_cw / n**2 - 1 / n, 1e-12, None))
        q_in = np.sqrt(np.clip(sum_c / sum_w**2, 1e-12, None))
    enough = n >= 2
    out = [np.where(enough, v, np.nan) for v in (infit, outfit)]
    zstd = [
        np.where(enough, (np.cbrt(ms) - 1) * (3 / q) + q / 3, np.nan)
        for ms, q in ((out[0], q_in), (out[1], q_out))
    ]
    # Point-measure correlation: every person with an ability who answered the item.
    t = ability[has]
    m = present[has][:, ids].astype(float)
    x = x0[has][:, ids]
    cnt = m.sum(0)
    sx = x.sum(0)
    st = t @ m
    stt = (t**2) @ m
    sxt = t @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        num = cnt * sxt - sx * st
        den = np.sqrt((cnt * sx - sx**2) * (cnt * stt - st**2))
        pm = np.where((den > 0) & (cnt >= 2), num / den, np.nan)
    return out[0], out[1], zstd[0], zstd[1], pm


def _alpha(x0, present, ids) -> float:
    """Cronbach's alpha (KR-20 for 0/1 items): k/(k-1) (1 - sum var_i / var(total)), the
    total's variance as the sum of the item covariance matrix, each covariance over the
    persons who answered both items (identical to KR-20 on complete data)."""
    k = len(ids)
    z = np.concatenate([x0[:, ids], present[:, ids]], axis=1, dtype=float)
    zz = z.T @ z  # one symmetric product: x'x, x'm (sums of x_i where j answered), m'm
    n = zz[k:, k:]
    if (n < 2).any():
        return float("nan")
    sx = zz[:k, k:]
    cov = zz[:k, :k] / n - (sx / n) * (sx.T / n)
    total = cov.sum()
    if total <= 0:
        return float("nan")
    return float(k / (k - 1) * (1 - np.trace(cov) / total))


# --- Andersen's LR test and Wald tests ---------------------------------------------------


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction
    above; Numerical Recipes 6.2). numpy has none and scipy is not a dependency here."""
    if x <= 0:
        return 1.0
    log_pre = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300
    bb = x + 1 - a
    c = 1 / tiny
    d = 1 / bb
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        bb += 2
        d = an * d + bb
        d = tiny if abs(d) < tiny else d
        c = bb + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return math.exp(log_pre) * h


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > x)."""
    return _gamma_q(df / 2.0, x / 2.0)


def _andersen(right, wrong, present, fit: _Fit, labels, max_iter, tol):
    """Split at the median raw score; refit each half on the items both halves can estimate
    (items extreme within a half are dropped from the test, and the whole sample refitted on
    the rest, as eRm does); LR = 2 (sum of halves' log-likelihoods - the whole's)."""
    ids = fit.items
    scores = right[:, ids].sum(1)
    answered = present[:, ids].sum(1)
    has = answered > 0
    median = float(np.median(scores[has]))
    low = has & (scores <= median)
    high = has & (scores > median)
    mixed = (scores > 0) & (scores < answered)
    test = AndersenTest(
        None, None, None, median, int((low & mixed).sum()), int((high & mixed).sum())
    )
    n_items = right.shape[1]
    wald_z = np.full(n_items, np.nan)
    wald_p = np.full(n_items, np.nan)
    for half, n in (("low", test.n_low), ("high", test.n_high)):
        if n == 0:
            side = "at or below" if half == "low" else "above"
            test.unavailable = (
                f"no student with a mixed score {side} the median raw score ({median:g})"
            )
            return test, wald_z, wald_p
    usable = np.zeros(n_items, dtype=bool)
    usable[ids] = True
    start = np.full(n_items, np.nan)
    start[ids] = fit.b
    try:
        for _ in range(n_items):
            halves = []
            for part, keep in ((low, fit.rows[1] <= median), (high, fit.rows[1] > median)):
                halves.append(
                    _estimate(right[part], wrong[part], present[part], usable, labels,
                              max_iter, max(tol, TEST_TOL), start=start, within=(fit, keep))
                )  # fmt: skip
            dropped = {**halves[0].excluded, **halves[1].excluded}
            if not dropped:
                break
            for i, why in dropped.items():
                half = "low" if i in halves[0].excluded else "high"
                test.dropped[i] = f"{why} in the {half} half"
                usable[i] = False
    except RaschDataError as exc:
        test.unavailable = f"the halves cannot be calibrated separately: {exc}"
        return test, wald_z, wald_p
    whole = fit
    if test.dropped:
        try:
            whole = _estimate(right, wrong, present, usable, labels, max_iter, tol, start=start)
        except RaschDataError as exc:
            test.unavailable = f"the items left after dropping cannot be calibrated: {exc}"
            return test, wald_z, wald_p
    lo_fit, hi_fit = halves
    test.lr = max(0.0, 2.0 * (lo_fit.loglik + hi_fit.loglik - whole.loglik))
    test.df = len(whole.items) - 1
    test.p = chi2_sf(test.lr, test.df)
    z = (hi_fit.b - lo_fit.b) / np.sqrt(hi_fit.se**2 + lo_fit.se**2)
    wald_z[whole.items] = z
    wald_p[whole.items] = [math.erfc(abs(v) / math.sqrt(2)) for v in z]
    return test, wald_z, wald_p


# --- The calibration ---------------------------------------------------------------------


def calibrate(
    responses: np.ndarray,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    labels=None,
    tests: bool = True,
) -> RaschResult:
    """Calibrate a persons x items matrix of 0/1 (NaN = not answered).

    ``labels`` (one per item) name items in error messages; ``tests=False`` skips Andersen's
    and the Wald tests (two more CML fits). Raises ``RaschDataError`` (a ValueError) when the
    data cannot identify the model, saying why and naming the items.
    """
    x = np.asarray(responses, dtype=float)
    if x.ndim != 2:
        raise ValueError("responses must be a 2-D persons x items matrix")
    n_persons, n_items = x.shape
    if labels is not None and len(labels) != n_items:
        raise ValueError("labels must name every item")
    present = ~np.isnan(x)
    if (present & (x != 0) & (x != 1)).any():
        raise ValueError("responses must be 0, 1 or NaN")
    x0 = np.where(present, x, 0.0)
    right = present & (x0 == 1)
    wrong = present & (x0 == 0)

    usable = present.any(0)
    excluded = {int(i): "no responses" for i in np.flatnonzero(~usable)}
    fit = _estimate(right, wrong, present, usable, labels, max_iter, tol)
    excluded.update(fit.excluded)
    idx = fit.items
    difficulty = np.full(n_items, np.nan)
    difficulty_se = np.full(n_items, np.nan)
    difficulty[idx] = fit.b
    difficulty_se[idx] = fit.se

    # Abilities: one WLE per distinct (answered items, raw score), mapped back to persons.
    m_items = present[:, idx]
    scores = right[:, idx].sum(1)
    answered = m_items.sum(1)
    has = answered > 0
    ability = np.full(n_persons, np.nan)
    ability_se = np.full(n_persons, np.nan)
    if has.any():
        first, inverse, _ = _unique_rows(m_items[has], scores[has])
        theta, tse = _wle_rows(fit.b, m_items[has][first], scores[has][first])
        ability[has] = theta[inverse]
        ability_se[has] = tse[inverse]

    extreme = has & ((scores == 0) | (scores == answered))
    infit_i, outfit_i, in_z, out_z, pm_i = _fit_stats(x0, present, idx, fit.b, ability, ~extreme)
    per_item = []
    for values in (infit_i, outfit_i, in_z, out_z, pm_i):
        full = np.full(n_items, np.nan)
        full[idx] = values
        per_item.append(full)
    infit, outfit, infit_zstd, outfit_zstd, pm = per_item

    finite = np.isfinite(ability)
    var = float(np.var(ability[finite])) if finite.sum() > 1 else float("nan")
    err = float(np.mean(ability_se[finite] ** 2)) if finite.any() else float("nan")
    reliability = max(0.0, (var - err) / var) if var and var > 0 else float("nan")

    andersen = None
    wald_z = np.full(n_items, np.nan)
    wald_p = np.full(n_items, np.nan)
    if tests:
        andersen, wald_z, wald_p = _andersen(right, wrong, present, fit, labels, max_iter, tol)
    return RaschResult(
        difficulty=difficulty,
        difficulty_se=difficulty_se,
        ability=ability,
        ability_se=ability_se,
        infit=infit,
        outfit=outfit,
        point_measure=pm,
        reliability=reliability,
        converged=fit.converged,
        iterations=fit.iterations,
        excluded=excluded,
        n_persons=int(n_persons),
        n_items=int(n_items),
        log_likelihood=fit.loglik,
        infit_zstd=infit_zstd,
        outfit_zstd=outfit_zstd,
        kr20=_alpha(x0, present, idx),
        n_extreme=int(extreme.sum()),
        andersen=andersen,
        wald_z=wald_z,
        wald_p=wald_p,
    )


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
