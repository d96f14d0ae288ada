"""opsctl rasch: calibrate exams on the Rasch model and see where calibration stands."""

from __future__ import annotations

import sys

import typer

from opsctl import errors, options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, print_table

app = typer.Typer(help="Rasch calibration: item difficulties, abilities and scaled scores.")

DB_OPT = options.DATABASE_URL


def _setup(database_url: str | None) -> None:
    from opsctl.service import open_backend

    open_backend(database_url)


@app.command("calibrate")
def calibrate_cmd(
    exam_id: int = typer.Argument(..., help="The exam to calibrate (see `opsctl rasch status`)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate and show; store nothing."),
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: the summary and every item."),
    database_url: str = DB_OPT,
) -> None:
    """Calibrate one exam (CML difficulties, WLE abilities) and store the results.

    Infit/outfit leave out sessions with all-right or all-wrong scores. An item is flagged
    "misfit" when its infit or outfit ZSTD is above 2, or a mean-square outside 0.7-1.3 is
    significant (|ZSTD| > 2); "differs by score" when its Wald test (low vs high scorers)
    is significant after Bonferroni. Andersen's LR test (median split) checks the whole
    model. Warnings (not converged, items excluded, tests failed or unavailable) are printed
    after the table. A rerun replaces the current results atomically; history is kept.

    JSON keys: exam_id, run_id, outcome, dry_run, method, n_persons, n_items, iterations,
    converged, reliability (person separation), kr20, n_extreme, duration_s,
    andersen{lr, df, p, median, n_low, n_high, dropped, unavailable} (null if not run),
    warnings[], items[{question, part, difficulty, se, infit, outfit, infit_zstd,
    outfit_zstd, wald_z, wald_p, point_measure, n_responses, p_correct, excluded, flags[]}].

    Exit 0 calibrated (or --dry-run shown), 1 failed, 2 refused (too few sessions, ...).
    """
    actor = options.actor(actor)
    _setup(database_url)
    from backend.exams.calibration import calibrate_exam

    out = console()
    if sys.stdout.isatty() and not as_json:
        with out.status(f"calibrating exam {exam_id}..."):
            summary = calibrate_exam(exam_id, dry_run=dry_run, actor=actor)
    else:
        summary = calibrate_exam(exam_id, dry_run=dry_run, actor=actor)
    if as_json:
        emit_json(summary)
        return

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    numbers = ("difficulty", "SE", "infit", "in Z", "outfit", "out Z", "Wald z", "pt-meas", "p")
    print_table(
        f"exam {exam_id}: item calibration ({summary.method})",
        ("item", *numbers, "flag"),
        [
            (f"{r.question}{r.part}", f(r.difficulty), f(r.se), f(r.infit),
             f(r.infit_zstd, "{:.1f}"), f(r.outfit), f(r.outfit_zstd, "{:.1f}"),
             f(r.wald_z, "{:.1f}"), f(r.point_measure), f(r.p_correct),
             r.excluded or ", ".join(r.flags))
            for r in summary.items
        ],
        right=numbers,
    )  # fmt: skip
    verb = "would store" if dry_run else f"stored as run {summary.run_id}"
    out.print(
        f"{summary.n_persons} sessions x {summary.n_items} items, "
        f"{'converged' if summary.converged else 'NOT converged'} in {summary.iterations} "
        f"iterations, reliability {f(summary.reliability)} (separation), KR-20 "
        f"{f(summary.kr20)}, {summary.duration_s:.2f}s: {verb}",
        markup=False,
    )
    a = summary.andersen
    if a is not None and not a.unavailable:
        out.print(
            f"Andersen's LR test (raw score <= {a.median:g} vs above): LR {a.lr:.1f} on "
            f"{a.df} df, p = {a.p:.3g}",
            markup=False,
        )
    for line in summary.warnings:
        out.print(f"warning: {line}", markup=False)


@app.command("status")
def status_cmd(
    exam_id: int = typer.Argument(None, help="One exam (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="JSON list of exams."),
    database_url: str = DB_OPT,
) -> None:
    """Which exams are calibrated, which need it, and the last run's outcome.

    JSON keys per exam: exam_id, title, closed, scored_sessions, current_run_id,
    calibrated_at, reliability, last_outcome, needs_calibration, kr20.
    """
    _setup(database_url)
    from backend.exams.calibration import calibration_status

    rows = calibration_status(exam_id)
    if exam_id is not None and not rows:
        raise CommandError(f"no exam {exam_id}")
    if as_json:
        emit_json(rows)
        return
    print_table(
        "Rasch calibration",
        ("exam", "title", "closed", "sessions", "current run", "reliability", "KR-20", "last",
         "due"),
        [
            (r.exam_id, r.title, "yes" if r.closed else "no", r.scored_sessions,
             r.current_run_id or "-", "-" if r.reliability is None else f"{r.reliability:.2f}",
             "-" if r.kr20 is None else f"{r.kr20:.2f}",
             r.last_outcome or "-", "yes" if r.needs_calibration else "")
            for r in rows
        ],
    )  # fmt: skip


@app.command("auto")
@errors.exit_policy(errors.JOB)
def auto_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON: calibrated, refused, skipped."),
    database_url: str = DB_OPT,
) -> None:
    """Calibrate every closed exam without a current calibration (for cron on every host).

    A job lock lets exactly one host run it; the others exit 0 saying so. Gated by the
    feature flag `rasch.auto`. Exit 0 done, nothing to do, switched off, or another host
    holds the lock; 2 failed (an exam could not be calibrated, the database or the flag
    could not be read).
    """
    _setup(database_url)
    from backend.exams.calibration import auto_calibrate
    from backend.ops.locks import LockHeld

    try:
        report = auto_calibrate()
    except LockHeld as exc:
        if as_json:
            emit_json({"calibrated": [], "refused": {}, "skipped_reason": str(exc)})
        else:
            console().print(f"skipped: {exc}", markup=False)
        return
    if as_json:
        emit_json(report)
    else:
        out = console()
        if report.skipped_reason:
            out.print(f"skipped: {report.skipped_reason}", markup=False)
        for exam_id in report.calibrated:
            out.print(f"calibrated exam {exam_id}")
        for exam_id, why in report.refused.items():
            out.print(f"exam {exam_id} not calibrated: {why}", markup=False)
        if not (report.calibrated or report.refused or report.skipped_reason):
            out.print("nothing to calibrate")
    if report.refused:
        raise typer.Exit(2)
