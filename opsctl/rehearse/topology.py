"""The production topology on one machine: nginx (the shipped site config) in front of N
gunicorn "hosts", each with its own var dir, on one PostgreSQL database.

Used by `opsctl rehearse` and by tests/e2e/test_topology.py alike: one core, two faces.
Everything listens on 127.0.0.1 (free ports), lives under one work directory and is stopped
and removed by ``close()``; the database is a scratch one created on the given server and
dropped afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend.config import REPO_ROOT, mask_url
from backend.ops.errors import OpsError

SITE_CONF = REPO_ROOT / "deploy" / "nginx" / "exam-backend.conf"
NGINX_INSTALL_HINT = "nginx is not installed: run `scripts/ensure-debs.sh nginx` (Debian package)"


class RehearsalError(OpsError):
    """The rehearsal could not be set up or run (not a drill's verdict: those are reported)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_nginx() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if not found:
        raise RehearsalError(NGINX_INSTALL_HINT)
    return found


def _wait(predicate: Callable[[], bool], timeout: float, what: str, proc=None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RehearsalError(f"{what}: exited with {proc.returncode}{_tail(log)}")
        if predicate():
            return
        time.sleep(0.2)
    raise RehearsalError(f"{what}: not ready within {timeout:g}s{_tail(log)}")


def _tail(log: Path | None) -> str:
    if not log or not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    # The exception that stopped it says more than the last line ("Worker failed to boot").
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Configured|Exit)\b", ln)]
    if errors:
        return f" ({errors[-1][:300]}; log: {log})"
    return f" (last log line: {lines[-1][:300]}; log: {log})" if lines else ""


# ---------------------------------------------------------------------------------------------
# nginx configuration: the shipped site file with local values on its `# rehearse:` lines


def render_site(
    text: str, upstreams: list[str], listen: str, access_log: Path, papers_dir: Path
) -> str:
    """The site config with the lines marked ``# rehearse: <what>`` pointed at this machine.

    The first ``upstream`` line becomes one line per address (its parameters kept); further
    ones are dropped. Every marker must be present: a rehearsal of a config whose directives
    moved would prove nothing.
    """
    out, seen = [], set()
    for line in text.splitlines():
        m = re.search(r"#\s*rehearse:\s*(\w+)\s*$", line)
        if not m:
            out.append(line)
            continue
        what, indent = m.group(1), line[: len(line) - len(line.lstrip())]
        body = line[: m.start()].strip()
        if what == "upstream":
            if what not in seen:
                params = body.rstrip(";").split()[2:]
                out += [f"{indent}server {' '.join([a, *params])};" for a in upstreams]
        elif what == "listen":
            out.append(f"{indent}listen {listen};")
        elif what == "access_log":
            fmt = body.rstrip(";").split()[2:]
            out.append(f"{indent}access_log {' '.join([str(access_log), *fmt])};")
        elif what == "papers":
            out.append(f"{indent}alias {str(papers_dir).rstrip('/')}/;")
        else:
            raise RehearsalError(f"{SITE_CONF}: unknown rehearse marker {what!r}")
        seen.add(what)
    missing = {"upstream", "listen", "access_log", "papers"} - seen
    if missing:
        raise RehearsalError(f"{SITE_CONF}: no `# rehearse:` line for {', '.join(sorted(missing))}")
    return "\n".join(out) + "\n"


def render_main(prefix: Path, site: Path) -> str:
    """nginx.conf for a private, foreground nginx: its own pid, logs and temp dirs."""
    user = ""
    if os.geteuid() == 0:
        # Workers would drop to `nobody` and could not read the work directory.
        import pwd

        user = f"user {pwd.getpwuid(0).pw_name};\n"
    temps = "\n".join(
        f"    {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n{temps}\n    access_log off;\n    include {site};\n}}\n"
    )


class Nginx:
    def __init__(self, workdir: Path, upstreams: list[str], papers_dir: Path) -> None:
        self.binary = find_nginx()
        self.prefix = workdir / "nginx"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = self.prefix / "access.log"
        self.error_log = self.prefix / "error.log"
        self.upstreams = upstreams
        self.papers_dir = papers_dir
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        site = self.prefix / "exam-backend.conf"
        site.write_text(
            render_site(
                SITE_CONF.read_text(),
                self.upstreams,
                f"127.0.0.1:{self.port}",
                self.access_log,
                self.papers_dir,
            )
        )
        conf = self.prefix / "nginx.conf"
        conf.write_text(render_main(self.prefix, site))
        return conf

    def _argv(self, conf: Path) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.error_log)]

    def start(self, timeout: float = 30.0) -> None:
        conf = self.write_config()
        check = subprocess.run(
            [*self._argv(conf), "-t", "-q"], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RehearsalError(f"nginx rejects the config: {check.stderr.strip()[-500:]}")
        self.proc = subprocess.Popen(
            self._argv(conf),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait(self._accepts, timeout, "nginx", self.proc, self.error_log)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def log_lines(self, offset: int = 0) -> list[str]:
        if not self.access_log.exists():
            return []
        with open(self.access_log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace").splitlines()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# App hosts


class AppHost:
    """One "host": gunicorn with its own var dir (OPS_VAR_DIR) and port, the environment a
    systemd unit would give it, and the same environment for its scheduled jobs."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        database_url: str,
        telemetry_dir: Path,
        media_dir: Path,
        workers: int,
        threads: int,
        secret_key: str,
    ) -> None:
        self.name = name
        self.var_dir = workdir / f"host-{name}"
        self.var_dir.mkdir(parents=True, exist_ok=True)
        media = self.var_dir / "media"
        if not media.exists():
            media.symlink_to(media_dir)  # the shared paper storage, as an NFS mount would be
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log = self.var_dir / "gunicorn.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            # One key for every host: a leaderboard cursor signed on one verifies on another.
            "SECRET_KEY": secret_key,
            "OPS_VAR_DIR": str(self.var_dir),
            "OPS_TELEMETRY_DIR": str(telemetry_dir),
            # Each host is its own instance in the telemetry (the OpenTelemetry resource).
            "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id=host-{name}",
            "OTEL_SERVICE_NAME": "exam-backend",
            "GUNICORN_BIND": self.address,
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": str(threads),
            "GUNICORN_LOGLEVEL": "warning",
            "GUNICORN_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "PAPER_DELIVERY": "accel",
            "DEBUG": "0",
            "PYTHONPATH": str(REPO_ROOT),
        }
        # What the operator's shell may carry that would send this host elsewhere: a real
        # Collector, sampling, telemetry off, another paper prefix than the nginx site's.
        for key in (
            "DJANGO_SETTINGS_MODULE",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OPS_TELEMETRY",
            "OPS_TRACING",
            "PAPER_ACCEL_PREFIX",
        ):
            self.env.pop(key, None)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 90.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    str(REPO_ROOT / "backend" / "gunicorn.conf.py"),
                ],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        _wait(self.ready, timeout, f"host {self.name} (gunicorn)", self.proc, self.log)

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """The host dies: every process of it (master and workers) gets SIGKILL at once."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def popen(self, argv: list[str]) -> subprocess.Popen:
        """A command run "on this host" (its environment), e.g. a scheduled job."""
        return subprocess.Popen(
            argv,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )


def opsctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "opsctl.cli", *args]


# ---------------------------------------------------------------------------------------------
# The whole topology


@dataclass
class Seeded:
    exam_id: int
    questions: list[tuple[int, str]]
    tokens: list[str]
    paper: Path
    closed_exam_id: int


def _pg_url(url: str) -> str:
    url = url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgres://", "postgresql://"
    )
    if not url.startswith("postgresql://"):
        raise RehearsalError(
            f"the rehearsal needs PostgreSQL (several hosts on one database), not {mask_url(url)}: "
            "pass --database-url postgresql://..."
        )
    return url


def _with_db(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


class Topology:
    """``start()`` creates the scratch database, seeds it, starts the hosts and nginx;
    ``close()`` stops them and removes everything (``keep=True`` keeps the files and the
    database for a post-mortem)."""

    def __init__(
        self,
        server_url: str,
        students: int,
        hosts: int = 2,
        workers: int = 2,
        threads: int = 4,
        workdir: Path | None = None,
        keep: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if hosts < 2:
            raise RehearsalError("the topology needs at least 2 app hosts")
        find_nginx()  # fail first, before any database or process exists
        self.server_url = _pg_url(server_url)
        self.students = students
        self.n_hosts = hosts
        self.workers = workers
        self.threads = threads
        self.keep = keep
        self.progress = progress or (lambda line: None)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="exam-rehearsal-"))
        self.dbname = f"exam_rehearsal_{secrets.token_hex(4)}"
        self.secret_key = secrets.token_urlsafe(50)
        self.database_url = _with_db(self.server_url, self.dbname)
        self.shared = self.workdir / "shared"  # paper storage (OPS_VAR_DIR of the seeding host)
        self.telemetry_dir = self.workdir / "telemetry"  # where a Collector's file exporter writes
        self.hosts: list[AppHost] = []
        self.nginx: Nginx | None = None
        self.seeded: Seeded | None = None
        self._db_created = False
        self._keep_files = False
        self._tokens_used = 0

    # -- lifecycle

    def start(self) -> Topology:
        try:
            self._create_database()
            self.progress(f"seeding {self.students} students on {mask_url(self.database_url)}")
            self.seeded = self._seed()
            names = [chr(ord("a") + i) for i in range(self.n_hosts)]
            for name in names:
                host = AppHost(
                    name,
                    self.workdir,
                    self.database_url,
                    self.telemetry_dir,
                    self.shared / "media",
                    self.workers,
                    self.threads,
                    self.secret_key,
                )
                self.progress(f"starting host {name} on {host.address}")
                host.start()
                self.hosts.append(host)
            self.nginx = Nginx(
                self.workdir, [h.address for h in self.hosts], self.shared / "media" / "papers"
            )
            self.nginx.start()
            self.progress(f"nginx on {self.nginx.url} in front of {len(self.hosts)} hosts")
        except BaseException:
            self._keep_files = True  # the error names a log under the work directory
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.nginx:
            self.nginx.stop()
        for host in self.hosts:
            host.stop()
        if self._db_created and not self.keep:
            self._drop_database()
        if self._own_workdir and not (self.keep or self._keep_files):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, RehearsalError):
            self._keep_files = True  # its message may name a log under the work directory
        self.close()

    # -- database

    def _admin(self):
        import psycopg

        try:
            return psycopg.connect(self.server_url, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RehearsalError(
                f"PostgreSQL at {mask_url(self.server_url)} does not answer: {first}"
            ) from None

    def _create_database(self) -> None:
        import psycopg

        with self._admin() as conn:
            try:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')
            except psycopg.Error as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RehearsalError(
                    f"cannot create the scratch database {self.dbname}: {first}"
                ) from None
        self._db_created = True

    def _drop_database(self) -> None:
        import psycopg

        try:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        except (psycopg.Error, RehearsalError):
            pass  # best effort on the way out; the name says what it was

    def connect(self):
        """A connection to the topology's database (autocommit)."""
        import psycopg

        return psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)

    def _seed(self) -> Seeded:
        import json

        self.shared.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "opsctl.rehearse.seed", str(self.students)],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "DATABASE_URL": self.database_url,
                "OPS_VAR_DIR": str(self.shared),
                "OPS_TELEMETRY": "0",
                "SECRET_KEY": self.secret_key,
                "PYTHONPATH": str(REPO_ROOT),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise RehearsalError(
                f"seeding the rehearsal database failed: {lines[-1] if lines else proc.returncode}"
            )
        doc = json.loads(proc.stdout)
        return Seeded(
            doc["exam_id"],
            [(int(q), str(p)) for q, p in doc["questions"]],
            doc["tokens"],
            Path(doc["paper"]),
            doc["closed_exam_id"],
        )

    def take_tokens(self, n: int) -> list[str]:
        """Students nobody has used yet (a used one's session may be submitted)."""
        assert self.seeded is not None
        if self._tokens_used + n > len(self.seeded.tokens):
            raise RehearsalError(
                f"the drills need more students than the {len(self.seeded.tokens)} seeded"
            )
        out = self.seeded.tokens[self._tokens_used : self._tokens_used + n]
        self._tokens_used += n
        return out

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url
