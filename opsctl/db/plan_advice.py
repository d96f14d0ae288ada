"""The plan advisor: a plan tree plus planner statistics in, findings out (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from opsctl.db.plan_model import PlanNode

LARGE_TABLE_ROWS = 10_000


@dataclass
class ColumnStats:
    n_distinct: float | None = None  # PostgreSQL's convention: negative = fraction of rows


@dataclass
class TableInfo:
    rows: float
    columns: dict[str, ColumnStats] = field(default_factory=dict)
    indexes: dict[str, list[str]] = field(default_factory=dict)  # name -> columns in order


# dexter's rule: an index is worth suggesting only when it at least halves the plan's cost.
MIN_COST_DROP = 0.5


@dataclass
class IndexAdvice:
    """An index the advisor suggests, and whether a hypothetical copy of it (HypoPG) proved
    it: ``verified`` (the estimated cost dropped by at least ``MIN_COST_DROP``), ``rejected``
    (it did not: not suggested), ``unverified`` (could not be tested; ``reason`` says why)."""

    relation: str
    columns: list[str]
    statement: str
    status: str = "unverified"
    reason: str = ""
    cost_before: float | None = None
    cost_after: float | None = None
    cost_drop: float | None = None  # fraction: 0.75 = the plan costs 75% less with the index
    used: bool | None = None  # the plan with the hypothetical index uses it


@dataclass
class Finding:
    severity: str  # info | warning | critical
    node_id: int
    node: str
    problem: str
    evidence: str
    action: str
    index: IndexAdvice | None = None


# A column on the left of a comparison, allowing PostgreSQL's parentheses and casts:
# (value)::text = '42', "question" = 3, t.x IN (...)
_COLUMN = re.compile(
    r'\(?"?(\w+)"?\)?(?:::[\w ]+?)?\s*(?:=|<>|!=|<=|>=|<|>|~~\*?|\bIS\b|\bIN\b|\bLIKE\b)',
    re.I,
)


def filter_columns(text: str, table: TableInfo) -> list[str]:
    seen = []
    for m in _COLUMN.finditer(text or ""):
        col = m.group(1)
        if col in table.columns and col not in seen:
            seen.append(col)
    return seen


def _distinct(table: TableInfo, col: str) -> float:
    nd = table.columns.get(col, ColumnStats()).n_distinct
    if nd is None:
        return 0.0
    return -nd * table.rows if nd < 0 else nd


def _covered(table: TableInfo, columns: list[str]) -> str | None:
    for name, cols in table.indexes.items():
        if cols and cols[0] == columns[0]:
            return name
    return None


def index_advice(
    relation: str, columns: list[str], table: TableInfo, concurrently: bool = True
) -> IndexAdvice:
    ordered = sorted(columns, key=lambda c: -_distinct(table, c))  # most selective first
    name = f"{relation}_{'_'.join(ordered)}_idx"[:63]
    how = "CREATE INDEX CONCURRENTLY" if concurrently else "CREATE INDEX"
    return IndexAdvice(relation, ordered, f"{how} {name} ON {relation} ({', '.join(ordered)});")


def judge_index(advice: IndexAdvice, before: float, after: float, used: bool) -> IndexAdvice:
    """The verdict on a hypothetical index from the plan's estimated total cost without and
    with it: verified when the cost drops by at least ``MIN_COST_DROP``, else rejected."""
    drop = (before - after) / before if before > 0 else 0.0
    ok = drop >= MIN_COST_DROP
    why = (
        f"HypoPG: estimated cost {before:.1f} -> {after:.1f} ({-drop:+.0%})"
        + ("" if used else "; the planner does not use the index")
        + ("" if ok else f"; an index must cut it by at least {MIN_COST_DROP:.0%}")
    )
    return replace(advice, status="verified" if ok else "rejected", reason=why,
                   cost_before=round(before, 2), cost_after=round(after, 2),
                   cost_drop=round(drop, 4), used=used)  # fmt: skip


def unverified(advice: IndexAdvice, reason: str) -> IndexAdvice:
    return replace(advice, status="unverified", reason=reason)


def with_verdict(finding: Finding, advice: IndexAdvice) -> Finding:
    """The finding as the operator sees it once its index was tested: a rejected index is not
    suggested (the action says so, with the numbers); an unverified one says it is unproven."""
    if advice.status == "rejected":
        action = (
            f"no index suggested: {advice.statement.rstrip(';')} would not pay for itself "
            f"({advice.reason}); look at the query itself (fewer rows, another filter)"
        )
        return replace(finding, severity="info", action=action, index=advice)
    if advice.status == "unverified":
        return replace(finding, action=f"{advice.statement} (unverified: {advice.reason})",
                       index=advice)  # fmt: skip
    return replace(finding, action=f"{advice.statement} ({advice.reason})", index=advice)


@dataclass
class StatementCost:
    """One statement an index was tested for, and what it did there."""

    fingerprint: str
    status: str
    cost_before: float | None
    cost_after: float | None
    cost_drop: float | None


@dataclass
class MergedIndex:
    """One index suggestion across several statements (same table and columns): the
    fingerprints it serves (``helps``: verified there, or unverified when nothing could be
    tested) and every statement it was tested for."""

    relation: str
    columns: list[str]
    statement: str
    status: str
    helps: list[str]
    statements: list[StatementCost]


def merge_index_advice(per_statement: list[tuple[str, list[Finding]]]) -> list[MergedIndex]:
    """Merge the index advice of several statements (fingerprint, findings): the same table
    and columns (in any order) is one index. Verified suggestions first, the ones serving the
    most statements first."""
    merged: dict[tuple[str, frozenset[str]], MergedIndex] = {}
    for fp, findings in per_statement:
        for f in findings:
            a = f.index
            if a is None:
                continue
            key = (a.relation, frozenset(a.columns))
            m = merged.setdefault(key, MergedIndex(a.relation, a.columns, a.statement, "", [],
                                                   []))  # fmt: skip
            if any(s.fingerprint == fp for s in m.statements):
                continue
            m.statements.append(StatementCost(fp, a.status, a.cost_before, a.cost_after,
                                              a.cost_drop))  # fmt: skip
    for m in merged.values():
        states = {s.status for s in m.statements}
        m.status = next(s for s in ("verified", "unverified", "rejected") if s in states)
        m.helps = [s.fingerprint for s in m.statements if s.status == m.status]
        if m.status == "rejected":
            m.helps = []
    order = {"verified": 0, "unverified": 1, "rejected": 2}
    return sorted(merged.values(), key=lambda m: (order[m.status], -len(m.helps), m.statement))


def _misestimate(node: PlanNode) -> Finding | None:
    if node.actual_rows is None or node.est_rows is None:
        return None
    est, act = max(node.est_rows, 1), max(node.actual_rows, 1)
    ratio = max(est / act, act / est)
    if ratio < 10 or max(est, act) < 100:
        return None
    sev = "critical" if ratio >= 1000 else "warning" if ratio >= 100 else "info"
    return Finding(
        sev, node.id, node.label, f"row estimate off by {ratio:.0f}x",
        f"planner expected {node.est_rows:.0f} rows, got {node.actual_rows:.0f} (per loop)",
        "ANALYZE the table; for correlated columns CREATE STATISTICS; raise the column's "
        "statistics target if the distribution is skewed",
    )  # fmt: skip


def advise(root: PlanNode, tables: dict[str, TableInfo], vendor: str, sql: str = "") -> list:
    findings: list[Finding] = []
    nodes = list(root.walk())
    total_ms = root.inclusive_ms or 0.0
    for node in nodes:
        table = tables.get(node.relation)
        if vendor == "postgresql" and node.node_type == "Seq Scan" and table:
            findings += _seq_scan(node, table)
        if vendor == "sqlite" and node.node_type == "SCAN" and table and not node.index:
            findings += _sqlite_scan(node, table, sql)
        if vendor == "sqlite" and "TEMP B-TREE" in node.detail.upper():
            findings.append(_temp_btree(node, sql, tables))
        if m := _misestimate(node):
            findings.append(m)
        if node.sort_space_type == "Disk":
            findings.append(Finding(
                "warning", node.id, node.label, "sort spilled to disk",
                f"{node.sort_method}, space type Disk",
                "raise work_mem for this query (SET LOCAL work_mem = '64MB') or add an index "
                "that returns rows in order",
            ))  # fmt: skip
        if node.hash_batches and node.hash_batches > 1:
            findings.append(Finding(
                "warning", node.id, node.label, "hash spilled to disk",
                f"{node.hash_batches} hash batches", "raise work_mem for this query",
            ))  # fmt: skip
        if node.lossy_blocks:
            findings.append(Finding(
                "warning", node.id, node.label, "lossy bitmap heap scan",
                f"{node.lossy_blocks:.0f} lossy heap blocks: every row on them is rechecked",
                "raise work_mem so the bitmap stays exact",
            ))  # fmt: skip
        if node.node_type == "Index Only Scan" and node.heap_fetches:
            findings.append(Finding(
                "info" if node.heap_fetches < 100 else "warning", node.id, node.label,
                "index-only scan visiting the heap",
                f"{node.heap_fetches:.0f} heap fetches: the visibility map is stale",
                f"VACUUM {node.relation} (opsctl vacuum {node.relation}) to refresh the "
                f"visibility map",
            ))  # fmt: skip
    if total_ms >= 1:
        for node in nodes:
            if node is not root and node.exclusive_ms and node.exclusive_ms >= 0.5 * total_ms:
                findings.append(Finding(
                    "warning", node.id, node.label, "this node takes most of the time",
                    f"{node.exclusive_ms:.1f} ms of {total_ms:.1f} ms exclusive",
                    "start tuning here",
                ))  # fmt: skip
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def _seq_scan(node: PlanNode, table: TableInfo) -> list[Finding]:
    if table.rows < LARGE_TABLE_ROWS or not node.filter:
        return []
    if node.actual_rows is not None and node.rows_removed is not None:
        scanned = node.actual_rows + node.rows_removed
        kept = node.actual_rows / scanned if scanned else 1
        evidence = f"read {scanned:.0f} rows per loop, kept {node.actual_rows:.0f} ({kept:.1%})"
    else:
        kept = (node.est_rows or 0) / table.rows
        evidence = f"expects {node.est_rows:.0f} of ~{table.rows:.0f} rows ({kept:.1%})"
    if kept > 0.5:
        return []
    columns = filter_columns(node.filter, table)
    if not columns:
        return []
    covering = _covered(table, columns)
    if covering:
        return []  # an index exists; the planner prefers the scan for its own reasons
    advice = index_advice(node.relation, columns, table)
    return [Finding(
        "critical" if kept < 0.01 else "warning", node.id, node.label,
        f"sequential scan of a large table ({table.rows:.0f} rows) throws most rows away",
        f"{evidence}; filter: {node.filter}", advice.statement, advice,
    )]  # fmt: skip


_WHERE = re.compile(r"\bWHERE\b(.*?)(?:\bGROUP\b|\bORDER\b|\bLIMIT\b|$)", re.I | re.S)
_ORDER = re.compile(r"\b(?:ORDER|GROUP)\s+BY\b(.*?)(?:\bLIMIT\b|\bHAVING\b|$)", re.I | re.S)


def _sqlite_scan(node: PlanNode, table: TableInfo, sql: str) -> list[Finding]:
    if table.rows < LARGE_TABLE_ROWS:
        return []
    where = _WHERE.search(sql or "")
    columns = filter_columns(where.group(1), table) if where else []
    advice = None
    if columns and not _covered(table, columns):
        advice = unverified(
            index_advice(node.relation, columns, table, concurrently=False),
            "SQLite cannot test an index hypothetically (HypoPG is a PostgreSQL extension)",
        )
        action = f"{advice.statement} (unverified: {advice.reason})"
    else:
        action = "filter on an indexed column, or add an index for this query's WHERE clause"
    return [Finding(
        "warning", node.id, node.label, f"full scan of a large table ({table.rows:.0f} rows)",
        node.detail, action, advice,
    )]  # fmt: skip


def _temp_btree(node: PlanNode, sql: str, tables: dict[str, TableInfo]) -> Finding:
    m = _ORDER.search(sql or "")
    cols = [c.strip().split()[0].strip('"') for c in m.group(1).split(",")] if m else []
    return Finding(
        "info", node.id, node.label, "sorting in a temporary B-tree",
        node.detail,
        f"an index on ({', '.join(cols)}) would return rows already in order"
        if cols else "an index matching the ORDER BY / GROUP BY would avoid the sort",
    )  # fmt: skip
