"""Prove an index suggestion before giving it: HypoPG's hypothetical indexes (PostgreSQL).

For each index the advisor suggests, the statement is planned (EXPLAIN, never ANALYZE) without
and then with a hypothetical copy of the index, which exists only in this session's planner;
``plan_advice.judge_index`` keeps it only when the estimated cost drops by at least half
(dexter's rule). No library does this from Python (dexter is a Ruby tool that creates the
indexes itself), hence the few statements here.

Safety: the same guard as plain EXPLAIN — a READ ONLY transaction with a statement timeout,
always rolled back, as the connecting user (plain EXPLAIN executes nothing; the read-only
role ``opsctl_explain`` could not plan an UPDATE or DELETE it may not run). Hypothetical
indexes are not transactional, so ``hypopg_reset()`` drops them after each check and again
whatever happened. When HypoPG is missing the suggestion stays, marked unverified, with why.
"""

from __future__ import annotations

from opsctl.db.plan_advice import Finding, IndexAdvice, judge_index, unverified, with_verdict
from opsctl.errors import one_line

NOT_INSTALLED = (
    "HypoPG is not installed on the database server (Debian: postgresql-{major}-hypopg; "
    "scripts/pg-setup.sh installs it)"
)
NOT_CREATED = (
    "HypoPG is installed but not created in this database (CREATE EXTENSION hypopg; "
    "scripts/pg-setup.sh does it)"
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def hypothetical_ddl(advice: IndexAdvice) -> str:
    """The CREATE INDEX HypoPG is given (no name, no CONCURRENTLY: it builds nothing)."""
    cols = ", ".join(_quote(c) for c in advice.columns)
    return f"CREATE INDEX ON {_quote(advice.relation)} ({cols})"


def missing_reason(cur) -> str | None:
    """Why HypoPG cannot be used in this database, or None when it can."""
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'")
    if cur.fetchone():
        return None
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'")
    if cur.fetchone():
        return NOT_CREATED
    cur.execute("SELECT current_setting('server_version_num')::int / 10000")
    return NOT_INSTALLED.format(major=cur.fetchone()[0])


def _uses(plan, index_name: str) -> bool:
    def walk(node) -> bool:
        if isinstance(node, dict):
            if node.get("Index Name") == index_name:
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(plan)


def _cost(plan) -> float:
    return float(plan[0]["Plan"]["Total Cost"])


def verify(raw, sql: str, params, candidates: list[IndexAdvice], timeout_s: float):
    """Each candidate judged on the statement's estimated cost without and with it."""
    import psycopg

    from opsctl.db.explain import pg_plan

    created = False
    with raw.cursor() as cur:
        try:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}")
            reason = missing_reason(cur)
            if reason:
                return [unverified(c, reason) for c in candidates]
            before_plan = pg_plan(cur, sql, params, name="opsctl_hypo_before")
            before = _cost(before_plan)
            judged = []
            for i, advice in enumerate(candidates):
                cur.execute(
                    "SELECT indexname FROM hypopg_create_index(%s)", [hypothetical_ddl(advice)]
                )
                created = True
                (index_name,) = cur.fetchone()
                plan = pg_plan(cur, sql, params, name=f"opsctl_hypo_{i}")
                judged.append(judge_index(advice, before, _cost(plan), _uses(plan, index_name)))
                cur.execute("SELECT hypopg_reset()")
            return judged
        except psycopg.errors.QueryCanceled:
            why = f"HypoPG check took longer than the {timeout_s:g}s statement timeout"
            return [unverified(c, why) for c in candidates]
        except psycopg.Error as exc:
            why = f"HypoPG check failed: {one_line(str(exc))}"
            return [unverified(c, why) for c in candidates]
        finally:
            raw.rollback()
            if created:  # hypothetical indexes outlive the transaction: drop them all
                cur.execute("SELECT hypopg_reset()")
                raw.rollback()


def verify_findings(raw, sql: str, params, findings: list[Finding], timeout_s: float):
    """``findings`` with every index suggestion tested (verified, rejected or unverified)."""
    candidates = [f.index for f in findings if f.index is not None]
    judged = iter(verify(raw, sql, params, candidates, timeout_s))
    out = [with_verdict(f, next(judged)) if f.index is not None else f for f in findings]
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])
