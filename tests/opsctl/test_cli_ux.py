"""The CLI as an operator lives in it: shell completion, help that reads at 80 columns,
progress on a terminal (and none in a pipe), piped tables that keep every value."""

from __future__ import annotations

import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from opsctl import output
from opsctl.cli import app

OPSCTL = str(Path(sys.executable).parent / "opsctl")
ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """opsctl as a real process, stdout and stderr piped (not a terminal)."""
    return subprocess.run(
        [OPSCTL, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
        cwd=ROOT, timeout=120, **kw,
    )  # fmt: skip


def commands() -> list[tuple[list[str], object]]:
    """Every command and group: (path after "opsctl", the click command)."""
    found = []

    def walk(cmd, path):
        found.append((path, cmd))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.fixture
def terminal(monkeypatch):
    """stdout and stderr as terminals (without colour, for readable assertions): the
    consoles opsctl.output hands out are replaced by forced-terminal ones."""
    monkeypatch.setattr(output, "_console", Console(force_terminal=True, color_system=None,
                                                    width=100, highlight=False))  # fmt: skip
    monkeypatch.setattr(output, "_err_console", Console(stderr=True, force_terminal=True,
                                                        color_system=None, width=100))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Shell completion

# The shell is detected from the parent process unless detection is off; off, the shell is
# the option's value, so each shell's script can be asked for here.
NO_DETECT = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


@pytest.mark.parametrize(
    "shell, marker",
    [("bash", "complete -o default -F _opsctl_completion opsctl"), ("zsh", "#compdef opsctl"),
     ("fish", "complete --command opsctl")],
)  # fmt: skip
def test_show_completion_prints_each_shells_script(shell, marker):
    r = run(["--show-completion", shell], NO_DETECT)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout and "_OPSCTL_COMPLETE" in r.stdout


def test_completion_completes_commands_and_options():
    def complete(words: str) -> list[str]:
        env = {"_OPSCTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
        r = run([], env)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("opsctl tra") == ["traces"]
    assert complete("opsctl traces st") == ["stats"]
    assert complete("opsctl traces stats --prom") == ["--prometheus"]
    assert "--students" in complete("opsctl demo seed --st")


def test_install_completion_writes_the_shell_startup_file(tmp_path):
    r = run(["--install-completion", "bash"], {**NO_DETECT, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "opsctl.sh"
    assert "_OPSCTL_COMPLETE" in script.read_text()
    assert str(script.relative_to(tmp_path)) in (tmp_path / ".bashrc").read_text()


def test_completion_options_are_in_the_root_help():
    r = run(["--help"], {"COLUMNS": "100"})
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


# ---------------------------------------------------------------------------------------------
# Help at 80 columns


COMMANDS = commands()
IDS = [" ".join(["opsctl", *path]) for path, _ in COMMANDS]


def help_texts(cmd) -> list[tuple[str, str]]:
    texts = [("help", cmd.help or ""), ("epilog", cmd.epilog or "")]
    texts += [("/".join(p.opts), getattr(p, "help", None) or "") for p in cmd.params]
    return texts


@pytest.mark.parametrize(
    "path, cmd", commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_help_paragraphs_have_no_line_breaks_inside(path, cmd):
    """Typer's rich help prints a paragraph's single line breaks as they are, so a paragraph
    broken at 100 columns in the source reads ragged at 80. Every help text the user sees is
    paragraphs separated by blank lines (a line starting "- " is a list item)."""
    for where, text in help_texts(cmd):
        for paragraph in inspect.cleandoc(text).partition("\f")[0].split("\n\n"):
            for line in paragraph.split("\n")[1:]:
                assert line.lstrip().startswith("- "), (path, where, paragraph)


@pytest.mark.parametrize(
    "path, cmd", commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_help_reads_well_at_80_columns(path, cmd):
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"},
                           terminal_width=80)  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    too_wide = [ln for ln in lines if cell_len(ln.rstrip()) > 80]
    assert not too_wide, too_wide
    # The description (between "Usage:" and the first panel) is wrapped by rich at 78
    # columns (one space of padding each side): no line may end while the next line's
    # first word would still have fitted, the mark of a line broken in the source.
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Usage:")) + 1
    end = next((i for i, ln in enumerate(lines) if ln.startswith("╭")), len(lines))
    text = [ln.rstrip() for ln in lines[start:end]]
    for a, b in itertools.pairwise(text):
        if a.strip() and b.strip() and not b.strip().startswith("- "):
            first = b.split()[0]
            assert cell_len(a.strip()) + 1 + cell_len(first) > 78, (path, a, b)


def test_help_is_cheap():
    """Completion runs opsctl on every Tab: the root help must not import heavy modules."""
    code = "import sys, opsctl.cli; print([m for m in ('django', 'textual', 'numpy', " \
           "'sqlalchemy', 'rich.progress', 'aiohttp') if m in sys.modules])"  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stderr


# ---------------------------------------------------------------------------------------------
# Piped tables: TSV, every value whole

LONG_ROUTE = (
    "api/exams/<int:exam_id>/sessions/<int:session_id>/answers/"
    "import-from-the-paper-scanner-for-students-who-sat-the-exam-late/"
)


# A statement far longer than 80 columns (spangen puts the fingerprint in a comment).
LONG_FP = "7e57" + "-long-statement" * 8
LONG_SQL = f"SELECT a.id, a.value FROM exams_answer a WHERE a.session_id = %s /* {LONG_FP} */"


@pytest.fixture
def spans(tmp_path, monkeypatch) -> Path:
    """Ten minutes of spans ending now; one route and one statement far longer than 80
    columns."""
    from tests.bench import spangen

    monkeypatch.setattr(spangen, "ROUTES", [*spangen.ROUTES[:2], (LONG_ROUTE, "POST", 0.5)])
    monkeypatch.setattr(spangen, "FINGERPRINTS", [LONG_FP, *spangen.FINGERPRINTS[1:]])
    now = time.time()
    spangen.fill(tmp_path, now - 600, now, 40)
    return tmp_path


def test_piped_traces_stats_is_tsv_with_every_value_whole(spans):
    r = run(["traces", "stats", "--telemetry-dir", str(spans)], {"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0] == ["route", "requests", "req/s", "errors %", "p50 ms", "p95 ms",
                       "p99 ms", "instances"]  # fmt: skip
    assert {len(row) for row in rows} == {8}
    assert LONG_ROUTE in [row[0] for row in rows]
    assert int(next(row for row in rows if row[0] == LONG_ROUTE)[1]) > 0
    # The title (the window) and the caption (the source) go to stderr, not into the data.
    assert "routes since 15m" in r.stderr and str(spans) in r.stderr


def test_piped_grep_finds_the_route(spans):
    """The report in the issue: `opsctl traces stats | grep answers` found nothing."""
    r = subprocess.run(f"{OPSCTL} traces stats --telemetry-dir {spans} | grep scanner",
                       shell=True, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith(LONG_ROUTE + "\t"), r.stdout


def test_piped_traces_list_keeps_trace_ids_and_routes(spans):
    r = run(["traces", "list", "--telemetry-dir", str(spans), "--route", "scanner"],
            {"COLUMNS": "60"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0][:2] == ["trace id", "route"] and len(rows) > 1
    for row in rows[1:]:
        assert re.fullmatch(r"[0-9a-f]{32}", row[0]) and row[1] == LONG_ROUTE


def test_piped_waterfall_keeps_each_statement_on_one_line(spans):
    r = run(["traces", "list", "--telemetry-dir", str(spans), "--route", "scanner"])
    trace_id = r.stdout.splitlines()[1].split("\t")[0]
    r = run(["traces", "show", trace_id, "--telemetry-dir", str(spans)], {"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    assert any(line.strip() == LONG_SQL for line in r.stdout.splitlines()), r.stdout


def test_table_on_a_terminal_is_a_rich_table(spans, terminal):
    r = CliRunner().invoke(app, ["traces", "stats", "--telemetry-dir", str(spans)])
    assert r.exit_code == 0, r.output
    assert "routes since 15m" in r.stdout and "┃" in r.stdout and "\t" not in r.stdout


def test_tsv_cells_stay_on_one_line(capsys):
    output.write_tsv(["a", "b"], [("x\ty", "two\nlines"), (None, 3)])
    assert capsys.readouterr().out == "a\tb\nx y\ttwo lines\n\t3\n"


# ---------------------------------------------------------------------------------------------
# Progress: demo seed


@pytest.mark.django_db(transaction=True)
def test_seed_tells_progress_with_increasing_counts():
    from backend.exams.seed import expected_rows, seed_demo

    calls: list[tuple[int, int]] = []
    report = seed_demo(students=25, exams=3, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) > 5
    assert calls[0][1] == expected_rows(25, 3, True)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[0] > 0
    assert all(d <= t for d, t in calls)
    written = report.students + report.sessions + report.answers + report.events + 3 * 66
    assert calls[-1] == (written, written)


def cli_database(monkeypatch) -> None:
    """The CLI in this process on the test database (the test's own connection closed)."""
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_seed_off_a_terminal_prints_only_the_summary(monkeypatch):
    cli_database(monkeypatch)
    r = CliRunner().invoke(app, ["demo", "seed", "--students", "20", "--no-migrate"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("seeded 20 students, 3 exams")
    assert r.stderr == ""  # no bar, no control characters
    r = CliRunner().invoke(app, ["demo", "seed", "--students", "20", "--no-migrate", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["students"] == 20 and r.stderr == ""


@pytest.mark.django_db(transaction=True)
def test_seed_on_a_terminal_shows_rows_rate_and_time_left(monkeypatch, terminal):
    cli_database(monkeypatch)
    r = CliRunner().invoke(app, ["demo", "seed", "--students", "30", "--no-migrate"])
    assert r.exit_code == 0, r.output
    assert "seeding 30 students" in r.stderr and "left" in r.stderr
    assert re.search(r"\b(\d+)/\1\b", r.stderr), r.stderr  # rows done/total, at the end
    assert "rows/s" in r.stderr
    assert "seeded 30 students" in r.stdout and "seeding" not in r.stdout


@pytest.mark.django_db(transaction=True)
def test_seed_with_json_on_a_terminal_is_quiet(monkeypatch, terminal):
    cli_database(monkeypatch)
    r = CliRunner().invoke(app, ["demo", "seed", "--students", "10", "--no-migrate", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["students"] == 10 and r.stderr == ""


# ---------------------------------------------------------------------------------------------
# Progress: loadtest


def test_loadtest_ticks_report_arrivals_answers_errors_and_a_recent_p99():
    import asyncio

    from opsctl.loadtest import engine, plan_arrivals
    from opsctl.loadtest.provision import Target

    target = Target(exam_id=1, tokens=["t"] * 10, questions=[(1, "")], provisioned=False)
    eng = engine._Engine("http://x", target, plan_arrivals(10, 10.0, None, 2.0), 2.0, 1, 5.0,
                         3, 4, 1.0, on_tick=None)  # fmt: skip
    ticks: list = []
    eng.on_tick = ticks.append

    async def load():
        t0 = time.monotonic()
        ticker = asyncio.create_task(eng._ticker(t0))
        eng.rec.arrived = 4
        eng.rec.latency["save"] += [10.0] * 98 + [500.0] * 2
        eng.rec.statuses["save"].update({"200": 100, "503": 2})
        eng.rec.transport["start"]["ClientConnectorError"] += 1
        await asyncio.sleep(engine.TICK_SECONDS * 1.5)
        eng.rec.latency["save"] += [20.0] * 10
        await asyncio.sleep(engine.TICK_SECONDS)
        ticker.cancel()

    asyncio.run(load())
    first, second = ticks[0], ticks[1]
    assert (first.phase, first.students, first.arrived) == ("load", 10, 4)
    assert first.requests == 100 and first.errors == 3 and first.p99_ms == 500.0
    assert first.planned_s == pytest.approx(eng.plan.arrivals[-1] + eng.plan.stay)
    assert second.requests == 110 and second.elapsed_s > first.elapsed_s
    assert second.p99_ms == 500.0  # the window still holds the first tick's answers


def test_loadtest_tick_line():
    from opsctl.commands.loadtest import tick_line
    from opsctl.loadtest import LoadProgress

    p = LoadProgress("load", 12.0, 60.0, 100, 40, 812, 3, 1, 48.25)
    assert tick_line(p) == "40/100 arrived, 812 answered, 3 errors (1 failed), p99 48 ms"
    p = LoadProgress("load", 0.5, 60.0, 100, 0, 0, 0, 0, None)
    assert tick_line(p) == "0/100 arrived, 0 answered, 0 errors, p99 -"


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """A real gunicorn on the test database, with an exam open now."""
    from django.db import connections

    from tests.backend.factories import make_exam
    from tests.e2e.gunicorn_server import GunicornServer, django_database_url

    make_exam(title="Progress")
    for conn in connections.all():
        conn.close()
    server = GunicornServer(django_database_url(),
                            env={"OPS_TELEMETRY_DIR": str(tmp_path / "telemetry")},
                            log_path=tmp_path / "gunicorn.log")  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_loadtest_on_a_terminal_shows_progress_and_piped_stays_clean(gunicorn, terminal,
                                                                     monkeypatch):  # fmt: skip
    args = ["loadtest", gunicorn.url, "-n", "4", "-d", "2s", "--think", "0.3s"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "load, 2s planned" in r.stderr and "arrived" in r.stderr and "p99" in r.stderr
    assert "lost = 0  OK" in r.stdout and "arrived" not in r.stdout
    # Not a terminal: the one starting line on stderr, nothing else.
    monkeypatch.setattr(output, "_console", None)
    monkeypatch.setattr(output, "_err_console", None)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("4 students on exam ") and "arrived" not in r.stderr


def test_piped_queries_top_prints_each_example_statement_whole(spans):
    r = run(["queries", "top", "--telemetry-dir", str(spans), "--since", "15m"],
            {"COLUMNS": "80"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    assert any(line.strip() == LONG_SQL for line in r.stdout.splitlines()), r.stdout
