"""The query-plan tree shared by PostgreSQL and SQLite (pure: parsing only, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class PlanNode:
    id: int
    node_type: str
    relation: str = ""
    index: str = ""
    est_rows: float | None = None
    actual_rows: float | None = None
    loops: int = 1
    total_cost: float | None = None
    inclusive_ms: float | None = None
    exclusive_ms: float | None = None
    filter: str = ""
    rows_removed: float | None = None
    buffers: dict = field(default_factory=dict)
    sort_method: str = ""
    sort_space_type: str = ""
    hash_batches: int | None = None
    heap_fetches: float | None = None
    lossy_blocks: float | None = None
    detail: str = ""  # SQLite's text
    children: list[PlanNode] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    @property
    def label(self) -> str:
        if self.detail:
            return self.detail
        parts = [self.node_type]
        if self.index:
            parts.append(f"using {self.index}")
        if self.relation:
            parts.append(f"on {self.relation}")
        return " ".join(parts)


def from_postgres(plan_json: list | dict) -> PlanNode:
    """Parse ``EXPLAIN (FORMAT JSON)`` output; times are per loop in PostgreSQL, so inclusive
    time is actual total time x loops and exclusive time subtracts the children's."""
    top = plan_json[0] if isinstance(plan_json, list) else plan_json
    counter = iter(range(1, 1_000_000))

    def build(p: dict, in_parallel: bool = False) -> PlanNode:
        loops = int(p.get("Actual Loops", 1) or 1)
        inclusive = p.get("Actual Total Time")
        # Under a Gather the loops are parallel workers running at once: their average time
        # is the wall time, not time x loops.
        if inclusive is not None and not in_parallel:
            inclusive = inclusive * loops
        node = PlanNode(
            id=next(counter),
            node_type=p.get("Node Type", "?"),
            relation=p.get("Relation Name", ""),
            index=p.get("Index Name", ""),
            est_rows=p.get("Plan Rows"),
            actual_rows=p.get("Actual Rows"),
            loops=loops,
            total_cost=p.get("Total Cost"),
            inclusive_ms=inclusive,
            filter=p.get("Filter", "") or p.get("Index Cond", "") or p.get("Recheck Cond", ""),
            rows_removed=p.get("Rows Removed by Filter"),
            buffers={k: v for k, v in p.items() if k.startswith(("Shared", "Temp", "Local"))},
            sort_method=p.get("Sort Method", ""),
            sort_space_type=p.get("Sort Space Type", ""),
            hash_batches=p.get("Hash Batches"),
            heap_fetches=p.get("Heap Fetches"),
            lossy_blocks=p.get("Lossy Heap Blocks"),
        )
        if node.node_type == "Seq Scan" and p.get("Filter"):
            node.filter = p["Filter"]
        parallel = in_parallel or node.node_type in {"Gather", "Gather Merge"}
        node.children = [build(c, parallel) for c in p.get("Plans", [])]
        if node.inclusive_ms is not None:
            child = sum(c.inclusive_ms or 0 for c in node.children)
            node.exclusive_ms = max(node.inclusive_ms - child, 0.0)
        return node

    return build(top["Plan"])


_SQLITE_TABLE = re.compile(r"^(?:SCAN|SEARCH)\s+(?:TABLE\s+)?(\w+)", re.I)
_SQLITE_INDEX = re.compile(r"USING (?:COVERING )?INDEX (\w+)", re.I)


def from_sqlite(rows: list[tuple]) -> PlanNode:
    """Parse ``EXPLAIN QUERY PLAN`` rows ``(id, parent, notused, detail)`` into a tree."""
    root = PlanNode(id=0, node_type="QUERY PLAN", detail="QUERY PLAN")
    nodes = {0: root}
    for rid, parent, _unused, detail in rows:
        kind = detail.split()[0].upper() if detail else "?"
        m = _SQLITE_TABLE.match(detail)
        idx = _SQLITE_INDEX.search(detail)
        node = PlanNode(
            id=rid, node_type=kind, relation=m.group(1) if m else "",
            index=idx.group(1) if idx else "", detail=detail,
        )  # fmt: skip
        nodes[rid] = node
        nodes.get(parent, root).children.append(node)
    return root
