from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _plain_connections():
    """`opsctl top` runs without Django's pool (opsctl.service sets DB_POOL=0); the test
    process was configured with it, so switch it off here the same way."""
    from django.db import connections

    options = connections["default"].settings_dict["OPTIONS"]
    saved = options.pop("pool", None)
    yield
    if saved is not None:
        options["pool"] = saved


@pytest.fixture
def seeded(database_url, tmp_path, client):
    """A seeded demo database and telemetry files from real requests through Django."""
    from pathlib import Path

    from backend.exams.models import Student
    from backend.exams.seed import seed_demo
    from backend.ops import telemetry
    from opsctl.tui.sources import Sources
    from tests.backend.factories import auth

    report = seed_demo(students=40, exams=3)
    telemetry.setup(directory=tmp_path, force=True)
    try:
        student = Student.objects.get(external_id=report.demo_student)
        token = student.set_token()
        student.save()
        sid = client.post(f"/api/exams/{report.open_exam_id}/sessions/", **auth(token)).json()[
            "session_id"
        ]
        for seq in range(1, 4):
            client.post(f"/api/sessions/{sid}/answers/", {"question": 1, "answer": str(seq),
                        "seq": seq}, content_type="application/json", **auth(token))  # fmt: skip
        telemetry.force_flush()
    finally:
        telemetry.teardown()
    return Sources(Path(tmp_path), database_url, window_minutes=60)
