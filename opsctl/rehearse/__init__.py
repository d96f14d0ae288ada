"""`opsctl rehearse`: the production topology (nginx, N app hosts, one PostgreSQL) started
on this machine, the exam-day load and the drills run through it, one report.

- ``topology``: processes and configuration (nginx from deploy/nginx/, gunicorn hosts);
- ``drills``: paper, body limit, load, failover, flag propagation, jobs, telemetry;
- ``runner``: the whole rehearsal in order, and its report.

tests/e2e/test_topology.py drives the same topology and drills.
"""
