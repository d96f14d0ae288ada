"""The advisor on hand-made PostgreSQL plans (pure)."""

from __future__ import annotations

from opsctl.db.plan_advice import ColumnStats, TableInfo, advise
from opsctl.db.plan_model import from_postgres, from_sqlite


def plan(node: dict) -> list:
    return [{"Plan": node}]


def problems(p, tables=None, vendor="postgresql", sql=""):
    return [f.problem for f in advise(from_postgres(p) if vendor == "postgresql" else p,
                                      tables or {}, vendor, sql)]  # fmt: skip


BIG = TableInfo(
    rows=50_000,
    columns={"status": ColumnStats(3), "exam_id": ColumnStats(200), "id": ColumnStats(-1)},
    indexes={"t_pkey": ["id"]},
)


def seq(filter_, actual=5, removed=49_995, est=5):
    return plan({"Node Type": "Seq Scan", "Relation Name": "t", "Plan Rows": est,
                 "Actual Rows": actual, "Actual Loops": 1, "Actual Total Time": 20.0,
                 "Filter": filter_, "Rows Removed by Filter": removed,
                 "Total Cost": 900})  # fmt: skip


def test_seq_scan_on_large_table_suggests_index_most_selective_first():
    found = advise(from_postgres(seq("((status)::text = 'x'::text) AND (exam_id = 7)")),
                   {"t": BIG}, "postgresql")  # fmt: skip
    assert found[0].severity == "critical"
    assert (
        found[0].action == "CREATE INDEX CONCURRENTLY t_exam_id_status_idx ON t (exam_id, status);"
    )


def test_no_suggestion_when_an_index_covers_it_or_the_table_is_small_or_rows_kept():
    covered = TableInfo(BIG.rows, BIG.columns, {"t_exam": ["exam_id", "status"]})
    assert "sequential scan" not in " ".join(problems(seq("(exam_id = 7)"), {"t": covered}))
    small = TableInfo(500, BIG.columns, {})
    assert problems(seq("(exam_id = 7)"), {"t": small}) == []
    kept = seq("(exam_id = 7)", actual=40_000, removed=10_000, est=40_000)
    assert problems(kept, {"t": BIG}) == []


def test_misestimates_by_order_of_magnitude():
    for actual, sev in ((1_500, "info"), (15_000, "warning"), (150_000, "critical")):
        p = plan({"Node Type": "Index Scan", "Relation Name": "t", "Plan Rows": 100,
                  "Actual Rows": actual, "Actual Loops": 1, "Actual Total Time": 1.0})  # fmt: skip
        found = advise(from_postgres(p), {}, "postgresql")
        assert [(f.problem.split(" by ")[0], f.severity) for f in found] == [
            ("row estimate off", sev)
        ]


def test_spills_lossy_bitmaps_heap_fetches_and_dominant_node():
    p = plan({
        "Node Type": "Sort", "Actual Total Time": 100.0, "Actual Loops": 1, "Plan Rows": 10,
        "Actual Rows": 10, "Sort Method": "external merge", "Sort Space Type": "Disk",
        "Plans": [
            {"Node Type": "Hash Join", "Actual Total Time": 90.0, "Actual Loops": 1,
             "Plan Rows": 10, "Actual Rows": 10, "Plans": [
                {"Node Type": "Bitmap Heap Scan", "Relation Name": "a", "Actual Total Time": 5.0,
                 "Actual Loops": 1, "Plan Rows": 10, "Actual Rows": 10, "Lossy Heap Blocks": 40},
                {"Node Type": "Hash", "Actual Total Time": 80.0, "Actual Loops": 1,
                 "Plan Rows": 10, "Actual Rows": 10, "Hash Batches": 8, "Plans": [
                    {"Node Type": "Index Only Scan", "Relation Name": "b", "Index Name": "b_i",
                     "Actual Total Time": 2.0, "Actual Loops": 1, "Plan Rows": 10,
                     "Actual Rows": 10, "Heap Fetches": 500}]}]}]})  # fmt: skip
    found = problems(p)
    for expected in (
        "sort spilled to disk",
        "hash spilled to disk",
        "lossy bitmap heap scan",
        "index-only scan visiting the heap",
        "this node takes most of the time",
    ):
        assert expected in found, (expected, found)  # fmt: skip


def test_parallel_workers_are_not_counted_twice():
    p = plan({"Node Type": "Gather", "Actual Total Time": 50.0, "Actual Loops": 1,
              "Plans": [{"Node Type": "Seq Scan", "Relation Name": "t", "Actual Total Time": 45.0,
                         "Actual Loops": 3}]})  # fmt: skip
    root = from_postgres(p)
    assert root.children[0].inclusive_ms == 45.0 and root.exclusive_ms == 5.0


def test_sqlite_plan_tree_and_findings():
    root = from_sqlite([(2, 0, 0, "SCAN t"), (9, 0, 0, "USE TEMP B-TREE FOR ORDER BY")])
    tables = {"t": TableInfo(20_000, {"status": ColumnStats(), "exam_id": ColumnStats()}, {})}
    found = advise(root, tables, "sqlite", "SELECT * FROM t WHERE status = 'x' ORDER BY exam_id")
    assert [f.problem.split(" (")[0] for f in found] == [
        "full scan of a large table",
        "sorting in a temporary B-tree",
    ]
    assert found[0].action == "CREATE INDEX t_status_idx ON t (status);"
    assert "(exam_id)" in found[1].action
