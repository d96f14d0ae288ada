"""The rehearsal in order and its report: the one service function behind `opsctl rehearse`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from opsctl.rehearse import drills
from opsctl.rehearse.topology import Topology


@dataclass
class RehearsalReport:
    database: str  # the server (masked); the scratch database is dropped afterwards
    hosts: list[str]  # "a=127.0.0.1:port", ...
    nginx: str
    paper: drills.PaperResult
    body_limit: drills.BodyLimitResult
    load: drills.LoadSummary
    failover: drills.FailoverResult
    flag: drills.FlagResult
    jobs: list[drills.JobResult]
    telemetry: drills.TelemetryResult

    @property
    def ok(self) -> bool:
        return all(
            x.ok
            for x in (
                self.paper,
                self.body_limit,
                self.load,
                self.failover,
                self.flag,
                self.telemetry,
            )
        ) and all(j.ok for j in self.jobs)

    @property
    def lost(self) -> int:
        return self.load.lost + self.failover.load.lost

    @property
    def exit_code(self) -> int:
        """0 every drill passed; 2 an acknowledged answer was lost; 1 another drill failed."""
        if self.lost:
            return 2
        return 0 if self.ok else 1


def rehearse(
    server_url: str,
    students: int = 200,
    duration: float = 60.0,
    think: float = 2.0,
    failover_students: int | None = None,
    failover_duration: float | None = None,
    hosts: int = 2,
    workers: int = 2,
    threads: int = 4,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RehearsalReport:
    from backend.config import mask_url

    say = progress or (lambda line: None)
    f_students = failover_students or students
    f_duration = failover_duration or duration
    # Students: the load, the failover load, the paper drill and the flag drill.
    with Topology(
        server_url, students + f_students + 2, hosts, workers, threads, keep=keep, progress=say
    ) as topo:
        say("drill: the paper through nginx")
        paper = drills.paper_drill(topo)
        body = drills.body_limit_drill(topo)
        say(f"load: {students} students for {duration:g}s through nginx")
        load = drills.summarize(drills.run_load(topo, students, duration, think))
        say(
            f"drill: kill -9 host {topo.hosts[-1].name} during {f_students} students' "
            f"{f_duration:g}s load"
        )
        failover = drills.failover_drill(topo, f_students, f_duration, think)
        say("drill: a flag changed on one host, seen on another")
        flag = drills.flag_drill(topo)
        say("drill: scheduled jobs on every host at once")
        jobs = drills.jobs_drill(topo)
        say("check: telemetry from every host")
        telemetry = drills.telemetry_check(topo)
        return RehearsalReport(
            mask_url(topo.server_url),
            [f"{h.name}={h.address}" for h in topo.hosts],
            topo.url,
            paper,
            body,
            load,
            failover,
            flag,
            jobs,
            telemetry,
        )
