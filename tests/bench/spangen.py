"""Fast writer of realistic OTLP JSON span files, in the backend's layout
(``traces-<host>-<pid>-<YYYYmmddHH>.jsonl``, one batch of up to 500 spans per line, as the
BatchSpanProcessor + file exporter write them). Lines are assembled from pre-encoded
templates (no JSON encoding per span), so millions of spans take seconds.

Each request is one server span and ``DB_PER_REQUEST`` DB client spans inside it, with a
route, a status code, fingerprints and (rarely) an N+1 event, like the backend's."""

from __future__ import annotations

import calendar
import os
import random
import time
from pathlib import Path

DB_PER_REQUEST = 4
REQUESTS_PER_LINE = 100  # 500 spans a line
ROUTES = [
    ("api/sessions/<int:session_id>/answers/", "POST", 0.80),
    ("api/exams/<int:exam_id>/sessions/", "POST", 0.12),
    ("api/leaderboard/", "GET", 0.08),
]
FINGERPRINTS = [
    "0ea7a938eae128df", "e47b69fb2ad7eb4f", "1b2c3d4e5f607182",
    "9988776655443322", "0123456789abcdef", "5a5a5a5a5a5a5a5a",
]  # fmt: skip

_RESOURCE = (
    b'{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"exam-backend"}},'
    b'{"key":"host.name","value":{"stringValue":"%s"}}]},"scopeSpans":['
)
_SCOPE_SERVER = b'{"scope":{"name":"opentelemetry.instrumentation.django"},"spans":['
_SCOPE_DB = b'{"scope":{"name":"backend.ops.telemetry"},"spans":['
_NPLUS1 = (
    b'{"name":"db.n_plus_one","timeUnixNano":"%d","attributes":[{"key":"db.query.fingerprint",'
    b'"value":{"stringValue":"%s"}},{"key":"db.query.text","value":{"stringValue":"SELECT 1"}},'
    b'{"key":"threshold","value":{"intValue":"10"}}]}'
)


def _server_template(route: str, method: str) -> bytes:
    r = route.encode()
    return (
        b'{"traceId":"%s","spanId":"%s","flags":256,"name":"' + method.encode() + b" " + r
        + b'","kind":2,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":['
        b'{"key":"http.request.method","value":{"stringValue":"' + method.encode() + b'"}},'
        b'{"key":"url.scheme","value":{"stringValue":"http"}},'
        b'{"key":"http.route","value":{"stringValue":"' + r + b'"}},'
        b'{"key":"http.response.status_code","value":{"intValue":"%d"}}],'
        b'"events":[%s],"status":{%s}}'
    )  # fmt: skip


def _db_template(route: str, fp: str) -> bytes:
    sql = f"SELECT a.id, a.value FROM exams_answer a WHERE a.session_id = %s /* {fp} */"
    return (
        b'{"traceId":"%s","spanId":"%s","parentSpanId":"%s","flags":256,'
        b'"name":"SELECT postgresql","kind":3,"startTimeUnixNano":"%d","endTimeUnixNano":"%d",'
        b'"attributes":[{"key":"db.system","value":{"stringValue":"postgresql"}},'
        b'{"key":"db.query.fingerprint","value":{"stringValue":"' + fp.encode() + b'"}},'
        b'{"key":"http.route","value":{"stringValue":"' + route.encode() + b'"}},'
        b'{"key":"db.query.text","value":{"stringValue":"' + sql.replace("%s", "%%s").encode()
        + b'"}},{"key":"db.operation.name","value":{"stringValue":"SELECT"}},'
        b'{"key":"db.response.rows_affected","value":{"intValue":"1"}}],"status":{}}'
    )  # fmt: skip


class SpanWriter:
    """Writes requests (1 server + DB_PER_REQUEST client spans each) as batch lines."""

    def __init__(self, directory: Path, host: str = "gen", pid: int = 1, seed: int = 7):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host, self.pid = host, pid
        self.rng = random.Random(seed)
        self.servers = [(_server_template(r, m), w) for r, m, w in ROUTES]
        self.cum = []
        acc = 0.0
        for _, w in self.servers:
            acc += w
            self.cum.append(acc)
        self.dbs = {r: [_db_template(r, fp) for fp in FINGERPRINTS] for r, _, _ in ROUTES}
        # Latencies (ns): a lognormal pool sampled in turn, median about 5 ms.
        self.pool = [int(self.rng.lognormvariate(15.4, 0.6)) for _ in range(4096)]
        self.n = 0
        self.prefix = f"{self.rng.getrandbits(64):016x}"
        self.handles: dict[str, object] = {}
        self.last_ns = 0

    def _file(self, at_ns: int):
        hour = time.strftime("%Y%m%d%H", time.gmtime(at_ns / 1e9))
        fh = self.handles.get(hour)
        if fh is None:
            for old in self.handles.values():
                old.close()
            self.handles = {}
            path = self.directory / f"traces-{self.host}-{self.pid}-{hour}.jsonl"
            fh = self.handles[hour] = open(path, "ab")  # noqa: SIM115 - closed in close()
        return fh

    def line(self, starts_ns: list[int]) -> bytes:
        """One batch line holding a request starting at each of ``starts_ns``."""
        servers, dbs = [], []
        rng, pool, n_pool = self.rng, self.pool, len(self.pool)
        for start in starts_ns:
            self.n += 1
            n = self.n
            trace = b"%s%016x" % (self.prefix.encode(), n)
            span = b"%016x" % (n << 4)
            x = rng.random()
            k = 0 if x < self.cum[0] else (1 if x < self.cum[1] else 2)
            template = self.servers[k][0]
            route = ROUTES[k][0]
            dur = pool[n % n_pool]
            error = n % 500 == 0
            event = _NPLUS1 % (start + dur // 2, FINGERPRINTS[1].encode()) if n % 997 == 0 else b""
            servers.append(template % (trace, span, start, start + dur, 500 if error else 200,
                                       event, b'"code":2' if error else b""))  # fmt: skip
            step = dur // (DB_PER_REQUEST + 1)
            for j in range(DB_PER_REQUEST):
                s = start + step * j + step // 4
                d = pool[(n * 7 + j) % n_pool] // 20
                dbs.append(self.dbs[route][(n + j) % len(FINGERPRINTS)] % (
                    trace, b"%016x" % ((n << 4) + j + 1), span, s, s + min(d, step)))  # fmt: skip
        head = _RESOURCE % self.host.encode()
        return (
            b'{"resourceSpans":[' + head + _SCOPE_SERVER + b",".join(servers) + b"]},"
            + _SCOPE_DB + b",".join(dbs) + b"]}]}]}\n"
        )  # fmt: skip

    def write(self, starts_ns: list[int]) -> None:
        """Requests starting at ``starts_ns`` (ascending), REQUESTS_PER_LINE to a line, each
        line into the file of the hour its last request ends in."""
        for i in range(0, len(starts_ns), REQUESTS_PER_LINE):
            chunk = starts_ns[i : i + REQUESTS_PER_LINE]
            at = chunk[-1] + 50_000_000
            self._file(at).write(self.line(chunk))
            self.last_ns = max(self.last_ns, at)

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.handles = {}


SPANS_PER_REQUEST = 1 + DB_PER_REQUEST


def fill(directory: Path, start_s: float, end_s: float, spans_per_second: float,
         hosts: int = 2) -> int:  # fmt: skip
    """Requests evenly spread over [start_s, end_s) at ``spans_per_second`` over ``hosts``
    writers; files get the mtime of their last line. The number of spans written."""
    per_host = spans_per_second / SPANS_PER_REQUEST / hosts
    total = 0
    for h in range(hosts):
        w = SpanWriter(directory, host=f"gen{h}", pid=100 + h, seed=h)
        gap = 1e9 / per_host
        t = start_s * 1e9 + h * gap / hosts
        end = end_s * 1e9
        batch: list[int] = []
        while t < end:
            batch.append(int(t))
            t += gap
            if len(batch) >= 20 * REQUESTS_PER_LINE:
                w.write(batch)
                total += len(batch) * SPANS_PER_REQUEST
                batch = []
        if batch:
            w.write(batch)
            total += len(batch) * SPANS_PER_REQUEST
        w.close()
    for p in Path(directory).glob("traces-*.jsonl"):
        hour = calendar.timegm(time.strptime(p.stem.rsplit("-", 1)[1], "%Y%m%d%H"))
        last = min(hour + 3600, end_s + 0.05)
        os.utime(p, (last, last))
    return total
