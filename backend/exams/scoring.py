"""Answer comparison and scoring rules (pure: no Django)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def normalise(value: str) -> str:
    return " ".join(value.strip().split()).casefold()


def _as_number(value: str) -> Decimal | None:
    try:
        number = Decimal(value.replace(",", ".") if value.count(",") == 1 else value)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def answers_match(given: str | None, correct: str) -> bool:
    """Trimmed, case-insensitive comparison; numbers compare by value ("5.0" == "5")."""
    if given is None:
        return False
    g, c = normalise(given), normalise(correct)
    if g == c:
        return True
    gn, cn = _as_number(g), _as_number(c)
    return gn is not None and cn is not None and gn == cn


def score(answers: dict[tuple[int, str], str], key: dict[tuple[int, str], str]) -> set:
    """The set of (question, part) the student got right."""
    return {qp for qp, correct in key.items() if answers_match(answers.get(qp), correct)}
