"""Run every database-backed opsctl command against one DATABASE_URL, in this fresh process
(Django's settings are per process), through CliRunner; print one JSON object per command.

    python -m tests.opsctl.dead_db_driver URL [--skip-create]

Used by test_cli_errors.py with dead, missing and garbage URLs.
"""

from __future__ import annotations

import json
import os
import sys

# (argv, the exit code its --help documents for "could not run")
COMMANDS: list[tuple[list[str], int]] = [
    (["flags", "list"], 1),
    (["flags", "show", "journal.writes"], 1),
    (["flags", "set", "journal.writes", "off", "--reason", "drill"], 1),
    (["flags", "history"], 1),
    (["rollback", "--last", "1", "--reason", "drill", "--yes"], 1),
    (["migrate", "status"], 1),
    (["migrate", "plan"], 1),
    (["migrate", "rollback", "exams", "zero", "--yes"], 1),
    (["retention", "status"], 1),
    (["retention", "run"], 2),
    (["retention", "run", "--dry-run"], 2),
    (["rasch", "status"], 1),
    (["rasch", "calibrate", "1"], 1),
    (["rasch", "auto"], 2),
    (["resources"], 3),
    (["resources", "--check"], 3),
    (["resources", "--json"], 3),
    (["explain", "SELECT 1"], 1),
    (["db", "tables"], 1),
    (["db", "indexes"], 1),
    (["db", "activity"], 1),
    (["db", "cancel", "4242", "--reason", "drill", "--yes"], 1),
    (["db", "terminate", "4242", "--reason", "drill", "--yes"], 1),
    (["db", "check"], 3),
    (["db", "check", "--check"], 3),
    (["vacuum", "--yes"], 1),
    (["loadtest", "http://127.0.0.1:9", "-n", "2", "-d", "5s"], 3),
]
# Commands that may create a new database (a SQLite file) by design.
CREATING: list[tuple[list[str], int]] = [
    (["migrate", "apply", "--yes"], 1),
    (["demo", "seed", "--students", "2", "--exams", "1"], 1),
]


def main() -> None:
    url = sys.argv[1]
    os.environ["DATABASE_URL"] = url
    from typer.testing import CliRunner

    from opsctl.cli import app

    commands = list(COMMANDS)
    if url.startswith(("postgres", "postgresql")):
        commands.append((["queries", "top", "--source", "pg"], 1))
    if "--skip-create" not in sys.argv:
        commands += CREATING
    runner = CliRunner()
    for argv, code in commands:
        r = runner.invoke(app, argv, env={"DATABASE_URL": url, "OPS_DEBUG": ""})
        print(json.dumps({"argv": argv, "expected": code, "exit_code": r.exit_code,
                          "stderr": r.stderr, "stdout": r.stdout}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
