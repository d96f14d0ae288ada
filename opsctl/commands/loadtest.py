"""opsctl loadtest: rehearse exam day against a running backend and prove no save is lost."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl import errors, options
from opsctl.output import console, emit_json, err_console, interactive, print_table, progress_bar

# 1 and 2 say what the load found (failed requests, lost saves), so a load that could not
# run at all (bad input, the database or backend unavailable, a bug) is 3.
LOADTEST = errors.ExitPolicy(failure=3, unexpected=3, kind="loadtest")


@errors.exit_policy(LOADTEST)
def command(
    url: str = typer.Argument(..., help="Base URL of the backend, e.g. http://127.0.0.1:8000"),
    students: int = typer.Option(100, "--students", "-n", min=1, help="Simulated students."),
    duration: str = typer.Option("60s", "--duration", "-d", help="Length of the load: 60s, 2m."),
    rate: float = typer.Option(
        None,
        "--rate",
        min=0.001,
        help="Student arrivals per second (default: all arrive in the first quarter).",
    ),
    think: str = typer.Option("2s", "--think", help="Mean time between a student's auto-saves."),
    exam: int = typer.Option(None, "--exam", help="Exam ID (default: the exam open now)."),
    tokens_file: Path = typer.Option(
        None,
        "--tokens-file",
        exists=True,
        dir_okay=False,
        help="Tokens to use instead of provisioning students: one per line, or a JSON "
        'object with "tokens", "exam_id" and "questions" (a list of question, part pairs).',
    ),
    database_url: str = options.DATABASE_URL,
    seed: int = typer.Option(None, "--seed", help="Random seed for the students' behaviour."),
    connections: int = typer.Option(
        64,
        "--connections",
        min=1,
        help="Connections the students share (like a reverse proxy's upstream pool).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Simulate students who start, auto-save and submit; verify no acknowledged save is lost.

    Arrivals follow a fixed rate (open model) and latency counts from each request's scheduled
    time, so a queue in the server shows up in p99 instead of slowing the generator down.
    Without --tokens-file, students are created in the database of DATABASE_URL, which must be
    the one the server at URL uses.

    On a terminal a progress bar shows the time elapsed against the planned length, students
    arrived, requests answered, errors and the p99 of the last 5 seconds. Piped, one starting
    line on stderr; with --json, nothing but the report.

    Exit 0 when every request succeeded (after retries) and lost = 0; 1 when requests failed
    or were refused, or sessions could not be read back; 2 when an acknowledged save was lost;
    3 when the load could not run (bad input, no open exam, database unavailable).

    JSON keys: url, exam_id, students, duration_s, rate, think_s, seconds, requests, rps,
    retries, failed, client_errors, stale, endpoints[{endpoint, requests, rps, p50_ms, p95_ms,
    p99_ms, max_ms, statuses, transport_errors, retries, failed, client_errors}] (endpoints:
    start, save, submit, verify), generator{cpu_seconds, cpu_percent, schedule_lag_p99_ms,
    max_connections}, verification{sessions, verified, unverified, acked_saves,
    answers_checked, lost, lost_examples[{session_id, question, part, acked_seq,
    stored_seq}]}, error_samples{status: body}, provisioned.
    """
    from opsctl import loadtest as lt

    def progress(line: str) -> None:
        if not as_json:
            err_console().print(line, markup=False, highlight=False)

    run = dict(
        students=students,
        duration=duration,
        rate=rate,
        think=think,
        exam_id=exam,
        tokens_file=tokens_file,
        database_url=database_url,
        seed=seed,
        connections=connections,
        progress=progress,
    )
    if interactive(as_json):
        with progress_bar(detail=True) as bar:
            task = bar.add_task("load", total=None, detail="")
            report = lt.loadtest(url, **run, on_tick=lambda p: show_tick(bar, task, p))
    else:
        report = lt.loadtest(url, **run)
    if as_json:
        emit_json(report)
    else:
        _render(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def tick_line(p) -> str:
    """What a running load has done so far, in one line (``p`` is a LoadProgress)."""
    p99 = "-" if p.p99_ms is None else f"{p.p99_ms:.0f} ms"
    line = f"{p.arrived}/{p.students} arrived, {p.requests} answered, {p.errors} errors"
    return line + (f" ({p.failed} failed)" if p.failed else "") + f", p99 {p99}"


def show_tick(bar, task, p) -> None:
    if p.phase == "verify":
        bar.update(task, description="verifying", completed=p.planned_s, total=p.planned_s,
                   detail=tick_line(p))  # fmt: skip
    else:
        done = min(p.elapsed_s, p.planned_s)
        what = f"load, {p.planned_s:.0f}s planned"
        bar.update(task, description=what, completed=done, total=p.planned_s, detail=tick_line(p))


def _render(report) -> None:
    out = console()
    out.print(
        f"{report.students} students on exam {report.exam_id}: {report.requests} requests in "
        f"{report.seconds}s = {report.rps} req/s (arrivals {report.rate}/s, think "
        f"{report.think_s:g}s), {report.retries} retries, {report.failed} failed"
    )
    cols = ("endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "retries",
            "failed", "statuses")  # fmt: skip
    print_table(
        "",
        cols,
        [
            (s.endpoint, s.requests, f"{s.rps:g}" if s.endpoint != "verify" else "-",
             f"{s.p50_ms:.1f}", f"{s.p95_ms:.1f}", f"{s.p99_ms:.1f}", f"{s.max_ms:.1f}",
             s.retries, s.failed,
             " ".join(f"{k}:{v}" for k, v in {**s.statuses, **s.transport_errors}.items()))
            for s in report.endpoints
        ],
        right=cols[1:-1],
    )  # fmt: skip
    g = report.generator
    out.print(
        f"generator: {g.cpu_percent}% of one core ({g.cpu_seconds}s CPU), schedule lag p99 "
        f"{g.schedule_lag_p99_ms} ms, {g.max_connections} connections"
        + ("  [the generator may be the bottleneck]" if g.cpu_percent > 80 else "")
    )
    v = report.verification
    verdict = "OK" if v.lost == 0 else "LOST ACKNOWLEDGED SAVES"
    out.print(
        f"verification: {v.verified}/{v.sessions} sessions read back, {v.acked_saves} "
        f"acknowledged saves on {v.answers_checked} answers, lost = {v.lost}  {verdict}"
    )
    for lost in v.lost_examples:
        out.print(
            f"  lost: session {lost.session_id} question {lost.question}{lost.part} "
            f"acked seq {lost.acked_seq}, stored seq {lost.stored_seq}"
        )
    for code, body in report.error_samples.items():
        out.print(f"  first {code} answer: {body}", markup=False)
