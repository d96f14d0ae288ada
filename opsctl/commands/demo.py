"""opsctl demo: make realistic data to try the product and to measure it at volume."""

from __future__ import annotations

import typer

from opsctl import options
from opsctl.output import console, emit_json, interactive, progress_bar

app = typer.Typer(help="Demo data: seed students, exams and answers at realistic scale.")


@app.command("seed")
def seed(
    students: int = typer.Option(300, "--students", min=1, help="How many students to create."),
    exams: int = typer.Option(
        3, "--exams", min=1, help="How many exams: one open now, closed ones, one upcoming."
    ),
    answers: bool = typer.Option(
        True, "--answers/--no-answers", help="Also simulate sessions and answers (Rasch model)."
    ),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Apply migrations first."),
    seed_value: int = typer.Option(20261124, "--seed", help="Random seed (reproducible data)."),
    database_url: str = options.DATABASE_URL,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Seed demo data: students, exams, sessions and answers.

    100,000 students with answers take a few minutes (bulk inserts). On a terminal a bar
    shows the rows written, the rate and the time left; piped or with --json it is quiet.

    JSON keys: students, exams[{id,title,status}], sessions, answers, events, demo_student,
    demo_token, open_exam_id, seconds.

    Exit 0 seeded, 1 failed (database unavailable, a database error while seeding).
    """
    from opsctl.service import open_backend

    # With --migrate a new database is fine (a SQLite file is created).
    open_backend(database_url, create=migrate, migrated=not migrate)
    from django.core.management import call_command

    from backend.exams.seed import seed_demo

    if migrate:
        call_command("migrate", verbosity=0, interactive=False)
    kwargs = dict(students=students, exams=exams, answers=answers, seed=seed_value)
    if interactive(as_json):
        with progress_bar("rows") as bar:
            task = bar.add_task(f"seeding {students:,} students", total=None)

            def show(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = seed_demo(**kwargs, progress=show)
    else:
        report = seed_demo(**kwargs)
    if as_json:
        emit_json(report)
        return
    out = console()
    out.print(
        f"seeded {report.students} students, {len(report.exams)} exams, {report.sessions} "
        f"sessions, {report.answers} answers in {report.seconds}s"
    )
    for e in report.exams:
        out.print(f"  exam {e['id']}: {e['title']} ({e['status']})")
    out.print(f"demo student {report.demo_student}  token: {report.demo_token}")
