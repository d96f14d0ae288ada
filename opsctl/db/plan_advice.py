"""The plan advisor: a plan tree plus planner statistics in, findings out (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


@dataclass
class Finding:
    severity: str  # info | warning | critical
    node_id: int
    node: str
    problem: str
    evidence: str
    action: str


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


def index_suggestion(relation: str, columns: list[str], table: TableInfo) -> str:
    ordered = sorted(columns, key=lambda c: -_distinct(table, c))  # most selective first
    name = f"{relation}_{'_'.join(ordered)}_idx"[:63]
    return f"CREATE INDEX CONCURRENTLY {name} ON {relation} ({', '.join(ordered)});"


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
    return [Finding(
        "critical" if kept < 0.01 else "warning", node.id, node.label,
        f"sequential scan of a large table ({table.rows:.0f} rows) throws most rows away",
        f"{evidence}; filter: {node.filter}",
        index_suggestion(node.relation, columns, table),
    )]  # fmt: skip


_WHERE = re.compile(r"\bWHERE\b(.*?)(?:\bGROUP\b|\bORDER\b|\bLIMIT\b|$)", re.I | re.S)
_ORDER = re.compile(r"\b(?:ORDER|GROUP)\s+BY\b(.*?)(?:\bLIMIT\b|\bHAVING\b|$)", re.I | re.S)


def _sqlite_scan(node: PlanNode, table: TableInfo, sql: str) -> list[Finding]:
    if table.rows < LARGE_TABLE_ROWS:
        return []
    where = _WHERE.search(sql or "")
    columns = filter_columns(where.group(1), table) if where else []
    action = (
        index_suggestion(node.relation, columns, table).replace(" CONCURRENTLY", "")
        if columns and not _covered(table, columns)
        else "filter on an indexed column, or add an index for this query's WHERE clause"
    )
    return [Finding(
        "warning", node.id, node.label, f"full scan of a large table ({table.rows:.0f} rows)",
        node.detail, action,
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
