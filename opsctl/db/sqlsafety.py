"""What `opsctl explain` may run (pure: statement text in, a verdict out).

``--analyze`` executes the statement, and a READ ONLY transaction does not stop a server
function with side effects (``pg_terminate_backend``, ``pg_stat_reset``, replication slots).
So the statement is parsed with PostgreSQL's own parser (pglast wraps libpg_query) and every
function and operator it calls is listed; ``opsctl.db.explain`` looks their volatility up in
``pg_proc`` and refuses any volatile one that is not on ``HARMLESS_VOLATILE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlparse
from sqlparse import tokens as T

from backend.ops.errors import OpsError

DATA_MODIFYING = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY"}


class Refused(OpsError, ValueError):
    """The statement is not allowed; the message says why (exit 2: refused)."""

    exit_code = 2


def single_statement(sql: str) -> str:
    parts = [p.strip() for p in sqlparse.split(sql or "") if p.strip().rstrip(";").strip()]
    if not parts:
        raise Refused("no SQL statement given")
    if len(parts) > 1:
        raise Refused(f"{len(parts)} statements given; explain one statement at a time")
    return parts[0].rstrip(";").strip()


def keywords(sql: str) -> list[str]:
    stmt = sqlparse.parse(sql)[0]
    return [
        t.normalized.upper()
        for t in stmt.flatten()
        if t.ttype in (T.Keyword.DML, T.Keyword.DDL, T.Keyword.CTE, T.Keyword)
    ]


# Volatile in pg_catalog but with no effect beyond their own result.
HARMLESS_VOLATILE = frozenset(
    {"random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid"}
)


@dataclass(frozen=True)
class Calls:
    """The functions (schema or None, name) and operators (name) a statement calls."""

    functions: frozenset[tuple[str | None, str]]
    operators: frozenset[str]


def analyzable_calls(sql: str) -> Calls:
    """Parse a statement that ``--analyze`` would run; refuse anything but a plain read and
    return the calls it makes. ``sql`` may carry ``%s``/``?``/``$n`` placeholders."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError
    from pglast.visitors import Visitor

    numbered, _ = number_placeholders(sql)
    try:
        stmts = parse_sql(numbered)
    except ParseError as exc:
        raise Refused(f"PostgreSQL's parser refused the statement: {exc}") from None
    if len(stmts) != 1:
        raise Refused(f"{len(stmts)} statements given; explain one statement at a time")
    top = stmts[0].stmt
    if not isinstance(top, ast.SelectStmt):
        kind = type(top).__name__.removesuffix("Stmt").upper() or "this"
        raise Refused(
            f"--analyze runs the statement, so it is allowed only for SELECT or "
            f"WITH ... SELECT; this is {kind}"
        )

    functions: set[tuple[str | None, str]] = set()
    operators: set[str] = set()
    problems: list[str] = []

    class _Walk(Visitor):
        def visit_FuncCall(self, ancestors, node):
            names = [n.sval for n in node.funcname]
            functions.add((names[0] if len(names) > 1 else None, names[-1]))

        def visit_A_Expr(self, ancestors, node):
            for n in node.name or ():
                if isinstance(n, ast.String):
                    operators.add(n.sval)

        def visit_SelectStmt(self, ancestors, node):
            if node.intoClause is not None:
                problems.append("SELECT ... INTO creates a table")
            if node.lockingClause:
                problems.append("SELECT ... FOR UPDATE/SHARE takes row locks")

        def visit_InsertStmt(self, ancestors, node):
            problems.append("it modifies data (INSERT)")

        def visit_UpdateStmt(self, ancestors, node):
            problems.append("it modifies data (UPDATE)")

        def visit_DeleteStmt(self, ancestors, node):
            problems.append("it modifies data (DELETE)")

        def visit_MergeStmt(self, ancestors, node):
            problems.append("it modifies data (MERGE)")

    _Walk()(top)
    if problems:
        raise Refused(f"--analyze runs the statement, and {problems[0]}")
    return Calls(frozenset(functions), frozenset(operators))


def refuse_volatile(
    calls: Calls,
    volatile_functions: set[tuple[str, str]],
    volatile_operators: dict[str, str],
    search_path: list[str],
) -> None:
    """Refuse a statement calling a volatile function or operator. ``volatile_functions`` holds
    the (schema, name) of every volatile function the server has under the names called;
    ``volatile_operators`` maps operator names to the volatile function behind them; an
    unqualified call may reach any schema on ``search_path`` (``current_schemas(true)``)."""
    bad = []
    for schema, name in sorted(calls.functions, key=lambda c: (c[0] or "", c[1])):
        for vschema, vname in sorted(volatile_functions):
            if vname != name:
                continue
            if (schema or vschema) != vschema or (schema is None and vschema not in search_path):
                continue
            if vschema == "pg_catalog" and name in HARMLESS_VOLATILE:
                continue
            bad.append(f"{vschema}.{vname}()")
    bad += [f"operator {op} ({fn})" for op, fn in sorted(volatile_operators.items())]
    if bad:
        shown = ", ".join(dict.fromkeys(bad))
        raise Refused(
            f"--analyze would execute {shown}, which is volatile (it may have side effects "
            "that a read-only, rolled-back transaction does not undo); run plain EXPLAIN instead"
        )


def check_analyze(sql: str) -> None:
    """--analyze executes the statement, so only a plain read may pass."""
    words = keywords(sql)
    first = words[0] if words else ""
    if first not in {"SELECT", "WITH"}:
        raise Refused(
            f"--analyze runs the statement, so it is allowed only for SELECT or "
            f"WITH ... SELECT; this is {first or 'not a query'}"
        )
    bad = sorted(DATA_MODIFYING.intersection(words))
    if bad:
        raise Refused(
            f"--analyze runs the statement, and this one modifies data ({', '.join(bad)})"
        )
    if any(w in {"CREATE", "DROP", "ALTER", "GRANT", "REVOKE"} for w in words):
        raise Refused("--analyze runs the statement, and this one contains DDL")
    if "INTO" in words and first == "SELECT":
        raise Refused("--analyze runs the statement, and SELECT ... INTO creates a table")


def check_plain(sql: str) -> None:
    """Plain EXPLAIN never executes; still refuse what EXPLAIN cannot take."""
    words = keywords(sql)
    first = words[0] if words else ""
    if first not in {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "VALUES", "TABLE", "MERGE"}:
        raise Refused(f"EXPLAIN takes a query or a DML statement, not {first or 'this'}")


_NAMED = re.compile(r"%\((\w+)\)s")
_PYFORMAT = re.compile(r"%s|%\(\w+\)s")


def number_placeholders(sql: str) -> tuple[str, int]:
    """The statement with ``%s`` / ``?`` placeholders numbered ``$1``, ``$2``... (``$n`` kept),
    the form PREPARE takes, and how many parameters it has. Named ones (``%(session)s``, as
    in the save's statement) are numbered in order of first use, the same name the same
    number. A Django statement doubles a literal ``%`` when it has placeholders; PREPARE takes
    it single."""
    # Every statement's tokens: the text handed on must be the whole text, never a prefix.
    tokens = [t for stmt in sqlparse.parse(sql) for t in stmt.flatten()] if sql.strip() else []
    positional = any(t.ttype is T.Name.Placeholder and _PYFORMAT.fullmatch(t.value)
                     for t in tokens)  # fmt: skip
    out, count, highest = [], 0, 0
    names: dict[str, int] = {}
    for tok in tokens:
        named = _NAMED.fullmatch(tok.value) if tok.ttype is T.Name.Placeholder else None
        if tok.ttype is T.Name.Placeholder and tok.value in ("%s", "?"):
            count += 1
            highest = max(highest, count)
            out.append(f"${count}")
        elif named:
            if named.group(1) not in names:
                count += 1
                names[named.group(1)] = count
            highest = max(highest, names[named.group(1)])
            out.append(f"${names[named.group(1)]}")
        elif tok.ttype is T.Name.Placeholder and tok.value[1:].isdigit():
            highest = max(highest, int(tok.value[1:]))
            out.append(tok.value)
        else:
            out.append(tok.value.replace("%%", "%") if positional else tok.value)
    return "".join(out), highest
