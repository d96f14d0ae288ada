"""The advisor on hand-made PostgreSQL plans (pure)."""

from __future__ import annotations

from opsctl.db.plan_advice import (
    ColumnStats,
    TableInfo,
    advise,
    judge_index,
    merge_index_advice,
    unverified,
    with_verdict,
)
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
    assert found[0].action.startswith("CREATE INDEX t_status_idx ON t (status); (unverified: ")
    assert found[0].index.status == "unverified" and "SQLite" in found[0].index.reason
    assert "(exam_id)" in found[1].action


def _seq_finding(columns_filter="(exam_id = 7)"):
    (f,) = advise(from_postgres(seq(columns_filter)), {"t": BIG}, "postgresql")
    return f


def test_hypothetical_index_is_suggested_only_when_it_halves_the_cost():
    f = _seq_finding()
    assert f.index.relation == "t" and f.index.columns == ["exam_id"]
    good = with_verdict(f, judge_index(f.index, 900.0, 35.0, used=True))
    assert good.index.status == "verified" and good.index.cost_drop == round(865 / 900, 4)
    assert good.action.startswith("CREATE INDEX CONCURRENTLY t_exam_id_idx ON t (exam_id);")
    assert "900.0 -> 35.0 (-96%)" in good.action and good.severity == "critical"
    exactly_half = judge_index(f.index, 900.0, 450.0, used=True)
    assert exactly_half.status == "verified"
    poor = with_verdict(f, judge_index(f.index, 900.0, 600.0, used=True))
    assert poor.index.status == "rejected" and poor.severity == "info"
    assert poor.action.startswith("no index suggested: CREATE INDEX CONCURRENTLY t_exam_id_idx")
    assert "900.0 -> 600.0 (-33%)" in poor.action and "at least 50%" in poor.action
    unused = judge_index(f.index, 900.0, 900.0, used=False)
    assert unused.status == "rejected" and "does not use the index" in unused.reason
    missing = with_verdict(f, unverified(f.index, "HypoPG is not created in this database"))
    assert missing.index.status == "unverified" and missing.severity == "critical"
    assert missing.action.endswith("(unverified: HypoPG is not created in this database)")


def test_merged_index_advice_lists_the_statements_it_serves():
    f = _seq_finding()
    both = _seq_finding("((status)::text = 'x'::text) AND (exam_id = 7)")
    per_statement = [
        ("fp_a", [with_verdict(f, judge_index(f.index, 900.0, 30.0, True))]),
        ("fp_b", [with_verdict(f, judge_index(f.index, 500.0, 400.0, True))]),
        ("fp_c", [with_verdict(f, judge_index(f.index, 800.0, 20.0, True))]),
        ("fp_d", [with_verdict(both, judge_index(both.index, 900.0, 800.0, True))]),
        ("fp_e", advise(from_postgres(seq("(id = 5)")), {"t": BIG}, "postgresql")),  # t_pkey
    ]
    merged = merge_index_advice(per_statement)
    assert [(m.statement, m.status, m.helps) for m in merged] == [
        ("CREATE INDEX CONCURRENTLY t_exam_id_idx ON t (exam_id);", "verified", ["fp_a", "fp_c"]),
        ("CREATE INDEX CONCURRENTLY t_exam_id_status_idx ON t (exam_id, status);", "rejected",
         []),
    ]  # fmt: skip
    assert [(s.fingerprint, s.status, s.cost_after) for s in merged[0].statements] == [
        ("fp_a", "verified", 30.0), ("fp_b", "rejected", 400.0), ("fp_c", "verified", 20.0)
    ]  # fmt: skip
