"""Rich rendering of a plan tree with problem nodes highlighted and findings beneath."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

COLOURS = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _line(node, flagged: dict) -> Text:
    t = Text(node.label, style=COLOURS.get(flagged.get(node.id, ""), ""))
    bits = []
    if node.est_rows is not None:
        bits.append(f"est {node.est_rows:.0f}")
    if node.actual_rows is not None:
        bits.append(f"actual {node.actual_rows:.0f} x{node.loops}")
    if node.exclusive_ms is not None:
        bits.append(f"{node.exclusive_ms:.2f} ms excl / {node.inclusive_ms:.2f} incl")
    elif node.total_cost is not None:
        bits.append(f"cost {node.total_cost:.1f}")
    if node.rows_removed:
        bits.append(f"removed {node.rows_removed:.0f}")
    if node.sort_method:
        bits.append(f"{node.sort_method} ({node.sort_space_type})")
    if bits:
        t.append("  " + ", ".join(bits), style="dim")
    if node.filter:
        t.append(f"\n  filter: {node.filter}", style="dim")
    return t


def render(result) -> Group:
    rank = {"critical": 0, "warning": 1, "info": 2}
    flagged: dict[int, str] = {}
    for f in result.findings:
        if f.node_id not in flagged or rank[f.severity] < rank[flagged[f.node_id]]:
            flagged[f.node_id] = f.severity
    tree = Tree(Text(f"{result.vendor} plan" + (" (ANALYZE)" if result.analyzed else "")))

    def add(parent, node):
        branch = parent.add(_line(node, flagged))
        for c in node.children:
            add(branch, c)

    if result.root.node_type == "QUERY PLAN":
        for c in result.root.children:
            add(tree, c)
    else:
        add(tree, result.root)
    parts = [tree]
    if not result.findings:
        parts.append(Text("no problems found", style="green"))
    for f in result.findings:
        parts.append(Text(f"{f.severity.upper()} {f.problem}", style=COLOURS[f.severity]))
        parts.append(Text(f"  at: {f.node}\n  evidence: {f.evidence}\n  do: {f.action}"))
    return Group(*parts)
