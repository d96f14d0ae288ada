"""SQL fingerprints: the same statement shape gets the same id whatever its literals.

Pure (no Django): the backend tags DB spans with it and opsctl groups query statistics by it.
Literals and placeholders (%s, ?, $1, :name) become ``?``; ``IN (...)`` lists of any length
collapse to ``IN (...)``; whitespace and keyword case are normalised.
"""

from __future__ import annotations

import functools
import hashlib
import re

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w\"$])-?\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", re.I)
_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|\?|\$\d+|(?<!:):\w+")
_IN_LIST = re.compile(r"\bIN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)", re.I)
_VALUES_LIST = re.compile(
    r"\bVALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))*", re.I
)
_SPACE = re.compile(r"\s+")
_KEYWORDS = re.compile(
    r"\b(select|from|where|and|or|not|in|insert|into|values|update|set|delete|join|inner|left|"
    r"outer|on|order|by|group|having|limit|offset|as|returning|conflict|do|case|when|then|"
    r"else|end|is|null|distinct|exists|with|union|all|asc|desc|count|begin|commit)\b",
    re.I,
)


def normalise(sql: str) -> str:
    text = _STRING.sub("?", sql)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _SPACE.sub(" ", text).strip().rstrip(";")
    text = _IN_LIST.sub("IN (...)", text)
    text = _VALUES_LIST.sub("VALUES (...)", text)
    return _KEYWORDS.sub(lambda m: m.group(0).upper(), text)


@functools.lru_cache(maxsize=4096)
def fingerprint(sql: str) -> tuple[str, str]:
    """``(id, normalised text)``; the id is 16 hex characters, stable across processes.

    Cached: an application sends a few hundred distinct statement texts (parameters travel
    separately), so the regexes run once per text, not once per execution."""
    text = normalise(sql)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16], text


def operation(sql: str) -> str:
    """The statement's verb (SELECT, INSERT, ...), for span names and metrics."""
    head = sql.lstrip().split(None, 1)
    return head[0].upper() if head else ""
