"""opsctl rehearse: the production topology on this machine, exam day and its drills through
it, one report."""

from __future__ import annotations

import sys

import typer

from opsctl import options
from opsctl.output import console, emit_json, err_console


def command(
    database_url: str = typer.Option(
        None,
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="PostgreSQL server to rehearse on (default: the backend's DATABASE_URL). A "
        "scratch database is created there and dropped afterwards.",
    ),
    students: int = typer.Option(200, "--students", "-n", min=1, help="Students in the load."),
    duration: str = typer.Option("60s", "--duration", "-d", help="Length of the load."),
    think: str = typer.Option("2s", "--think", help="Mean time between a student's saves."),
    failover_students: int = typer.Option(
        None, "--failover-students", min=1, help="Students in the kill -9 drill (default: -n)."
    ),
    failover_duration: str = typer.Option(
        None, "--failover-duration", help="Length of the kill -9 drill (default: --duration)."
    ),
    hosts: int = typer.Option(2, "--hosts", min=2, max=8, help="App hosts behind nginx."),
    workers: int = typer.Option(2, "--workers", min=1, help="gunicorn workers per host."),
    threads: int = typer.Option(4, "--threads", min=1, help="Threads per worker."),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the scratch database and the work directory (post-mortem)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rehearse exam day on the production topology, on this machine.

    nginx (deploy/nginx/) in front of several gunicorn hosts, each with its
    own var dir, on one PostgreSQL; everything on loopback, free ports.

    Through nginx it runs: the paper download and its refusals, the body
    limit, the open-model exam-day load (the `opsctl loadtest` engine), one
    host killed with kill -9 mid-load and restarted, a flag changed on one
    host and seen on another, the scheduled jobs started on every host at
    once, and telemetry from every host. Needs nginx (`scripts/ensure-debs.sh
    nginx`) and a PostgreSQL where it may create a scratch database.

    Exit 0 every drill passed; 1 a drill failed or the rehearsal could not
    start; 2 an acknowledged answer was lost.

    JSON keys: database, hosts, nginx, ok, exit_code, lost; paper, body_limit;
    load {students, seconds, rate, requests, rps, save_p50_ms, save_p99_ms,
    p99_ms, retries, failed, client_errors, errors_seen, unreachable_seen,
    lost, acked_saves, verified_sessions, ok}; failover {killed, load,
    nginx_retried, rejoined, rejoin_seconds, ok}; flag {flag, ttl_seconds,
    effect_seconds, after_ttl_journaled, ok}; jobs [{job, ran_on, skipped_on,
    runs, ok}]; telemetry {hosts, instances, requests,
    trace_id, trace_continued, ok}.
    """
    from opsctl.rehearse import runner

    url = options.database_url(database_url)
    load_s = options.duration(duration, "--duration").total_seconds()
    think_s = options.duration(think, "--think").total_seconds()
    fail_s = (
        options.duration(failover_duration, "--failover-duration").total_seconds()
        if failover_duration
        else None
    )
    with _progress(as_json) as say:
        report = runner.rehearse(
            url,
            students=students,
            duration=load_s,
            think=think_s,
            failover_students=failover_students,
            failover_duration=fail_s,
            hosts=hosts,
            workers=workers,
            threads=threads,
            keep=keep,
            progress=say,
        )
    if as_json:
        from dataclasses import asdict

        emit_json({**asdict(report), "ok": report.ok, "exit_code": report.exit_code,
                   "lost": report.lost})  # fmt: skip
    else:
        render(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _progress:
    """A spinner with the current step on a terminal; plain lines on stderr otherwise
    (none with --json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status = None

    def __enter__(self):
        if self.quiet:
            return lambda line: None
        if sys.stderr.isatty():
            self.status = err_console().status("starting the topology")
            self.status.start()
            return lambda line: self.status.update(line)
        return lambda line: err_console().print(line, markup=False, highlight=False)

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.stop()


def _mark(ok: bool) -> str:
    return "OK" if ok else "FAILED"


def render(r) -> None:
    out = console()
    say = lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(
        f"Rehearsal: nginx {r.nginx} -> hosts {', '.join(r.hosts)} on {r.database} "
        "(scratch database)"
    )
    ld = r.load
    say(
        f"capacity   {ld.students} students arriving {ld.rate:g}/s: {ld.requests} requests in "
        f"{ld.seconds:g}s = {ld.rps:g} req/s, {ld.failed} failed, {ld.retries} client retries"
        f"  {_mark(ld.ok)}"
    )
    say(f"latency    save p50 {ld.save_p50_ms:.0f} ms, p99 {ld.save_p99_ms:.0f} ms; "
        f"start/save/submit p99 {ld.p99_ms:.0f} ms")  # fmt: skip
    acked = ld.acked_saves + r.failover.load.acked_saves
    say(f"lost       {r.lost} acknowledged answers lost (of {acked}; every session read back)"
        f"  {_mark(r.lost == 0)}")  # fmt: skip
    f = r.failover
    rejoin = (f"host {f.killed} rejoined {f.rejoin_seconds:g}s after its restart" if f.rejoined
              else f"host {f.killed} did NOT rejoin")  # fmt: skip
    say(f"failover   host {f.killed} killed (kill -9) mid-load: {f.load.failed} requests failed, "
        f"{f.load.unreachable_seen} unreachable errors seen by students, nginx replayed "
        f"{f.nginx_retried} on another host, lost {f.load.lost}; {rejoin}"
        f"  {_mark(f.ok)}")  # fmt: skip
    p = r.paper
    say(f"paper      {p.status} {p.content_type} {p.bytes} bytes"
        f"{' = the stored file' if p.matches_file else ' != the stored file'}; "
        f"/protected/ from outside {p.direct_status}; outside a session {p.before_session_status},"
        f" after submit {p.after_submit_status}  {_mark(p.ok)}")  # fmt: skip
    b = r.body_limit
    say(f"body limit a 65 KiB save -> {b.status} {b.body.strip()}  {_mark(b.ok)}")
    fl = r.flag
    effect = f"{fl.effect_seconds:g}s" if fl.effect_seconds is not None else "never"
    say(f"flag       {fl.flag} off on host {fl.changed_on}: effect on host {fl.observed_on} after "
        f"{effect} (TTL {fl.ttl_seconds:g}s); after the TTL {fl.after_ttl_journaled} of "
        f"{fl.after_ttl_saves} saves journaled  {_mark(fl.ok)}")  # fmt: skip
    for j in r.jobs:
        say(f"job        {j.job}: ran on {', '.join(j.ran_on) or 'no host'}, skipped (lock held) "
            f"on {', '.join(j.skipped_on) or 'no host'}  {_mark(j.ok)}")  # fmt: skip
    t = r.telemetry
    joined = "joined" if t.trace_continued else "did NOT join"
    say(f"telemetry  {t.instances} instances of {t.hosts} hosts in `opsctl traces stats` "
        f"({t.requests} requests); the backend {joined} a client's traceparent through nginx"
        f"  {_mark(t.ok)}")  # fmt: skip
    say(f"verdict    {'PASS' if r.ok else 'FAIL'}")
