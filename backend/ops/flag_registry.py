"""The kill switches the backend reads, with what each one turns off. Created (on) by the
migration ``ops.0002_default_flags``; `opsctl flags list` shows them."""

KNOWN_FLAGS: dict[str, str] = {
    "journal.writes": "Write every accepted save to the answer journal (AnswerEvent). Off: "
    "saves still store the answer, one statement less per save, no dispute evidence.",
    "leaderboard.cache": "Serve the leaderboard's first page from a short cache. Off: every "
    "request queries the database.",
    "telemetry.tracing": "Record OpenTelemetry spans for requests and SQL. Off: no spans, "
    "no per-statement overhead; metrics stay.",
    "rasch.auto": "Let `opsctl rasch auto` calibrate closed exams. Off: calibration only by hand.",
}
