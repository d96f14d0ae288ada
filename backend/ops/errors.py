"""The one error root of the product: a message for a person and an exit code for a script.

Backend services raise ``OpsError`` (or a subclass) for a failure an operator must see;
``opsctl`` subclasses it for its own failures and maps every one of them to one line on
stderr and an exit code in one place (``opsctl.cli``). Pure: imports nothing, so both sides
and ``opsctl --help`` can import it for free.
"""

from __future__ import annotations


class OpsError(Exception):
    """A failure with a one-line ``message`` and an ``exit_code``.

    ``exit_code`` None means "the failing command's own failure code": 1 for most commands,
    2 for scheduled jobs (``retention run``, ``rasch auto``), 3 (UNKNOWN) for checks. Give an
    explicit code only when it has a documented meaning of its own (e.g. 2 "refused").
    """

    exit_code: int | None = None

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class InvalidInput(OpsError, ValueError):
    """Operator input (an option, a policy file, a flag value) that cannot be used."""


class Unavailable(OpsError):
    """A dependency the command needs (the database, most often) cannot be used now."""
