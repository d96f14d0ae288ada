"""What `opsctl explain` may run (pure: statement text in, a verdict out)."""

from __future__ import annotations

import sqlparse
from sqlparse import tokens as T

DATA_MODIFYING = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY"}


class Refused(ValueError):
    """The statement is not allowed; the message says why."""


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


def number_placeholders(sql: str) -> tuple[str, int]:
    """The statement with ``%s`` / ``?`` placeholders numbered ``$1``, ``$2``... (``$n`` kept),
    the form PREPARE takes, and how many parameters it has. A Django statement doubles a
    literal ``%`` when it has placeholders; PREPARE takes it single."""
    tokens = list(sqlparse.parse(sql)[0].flatten()) if sql.strip() else []
    positional = any(t.ttype is T.Name.Placeholder and t.value == "%s" for t in tokens)
    out, count, highest = [], 0, 0
    for tok in tokens:
        if tok.ttype is T.Name.Placeholder and tok.value in ("%s", "?"):
            count += 1
            highest = max(highest, count)
            out.append(f"${count}")
        elif tok.ttype is T.Name.Placeholder and tok.value[1:].isdigit():
            highest = max(highest, int(tok.value[1:]))
            out.append(tok.value)
        else:
            out.append(tok.value.replace("%%", "%") if positional else tok.value)
    return "".join(out), highest
