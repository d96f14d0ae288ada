"""The student-facing JSON API. Each view parses, calls one service function, answers."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from backend.exams import leaderboard, sessions
from backend.exams.auth import authenticated_student_id, bearer_token_hash
from backend.exams.http import ApiError, api_view, parse_json_body
from backend.exams.models import Exam, ExamSession

VISIBLE_DAYS = 7


@api_view("GET")
def exams_list(request: HttpRequest) -> JsonResponse:
    authenticated_student_id(request)
    now = timezone.now()
    horizon = timezone.timedelta(days=VISIBLE_DAYS)
    exams = Exam.objects.filter(ends_at__gt=now - horizon, starts_at__lt=now + horizon).order_by(
        "starts_at", "id"
    )
    return JsonResponse(
        {
            "exams": [
                {
                    "id": e.id,
                    "title": e.title,
                    "starts_at": e.starts_at,
                    "ends_at": e.ends_at,
                    "duration_min": e.duration_min,
                    "status": e.status_at(now),
                }
                for e in exams
            ]
        }
    )


@api_view("POST")
def session_start(request: HttpRequest, exam_id: int) -> JsonResponse:
    result = sessions.start_session_for_token(bearer_token_hash(request), exam_id)
    return JsonResponse(
        {
            "session_id": result.session_id,
            "started_at": result.started_at,
            "deadline": result.deadline,
            "status": result.status,
        },
        status=201 if result.created else 200,
    )


@api_view("POST")
def answer_save(request: HttpRequest, session_id: int) -> JsonResponse:
    token_hash = bearer_token_hash(request)
    body = parse_json_body(request)
    result = sessions.save_answer(session_id, token_hash, body)
    return JsonResponse({"status": result.status, "seq": result.seq})


@api_view("POST")
def session_submit(request: HttpRequest, session_id: int) -> JsonResponse:
    result = sessions.submit_for_student(session_id, bearer_token_hash(request))
    return JsonResponse(
        {
            "status": "submitted",
            "session_status": result.status,
            "raw_score": result.raw_score,
            "max_score": result.max_score,
        }
    )


@api_view("GET")
def session_results(request: HttpRequest, session_id: int) -> JsonResponse:
    return JsonResponse(sessions.results_for_student(session_id, bearer_token_hash(request)))


@api_view("GET")
def leaderboard_view(request: HttpRequest) -> JsonResponse:
    authenticated_student_id(request)
    raw_exam = request.GET.get("exam")
    if not raw_exam:
        raise ApiError(400, "'exam' is required: /api/leaderboard/?exam=<id>")
    try:
        exam_id = int(raw_exam)
    except ValueError:
        raise ApiError(400, "'exam' must be an integer") from None
    limit = leaderboard.parse_limit(request.GET.get("limit"))
    page = leaderboard.leaderboard_page(exam_id, limit, request.GET.get("cursor") or None)
    return JsonResponse(
        {
            "exam_id": page.exam_id,
            "ranked_by": page.ranked_by,
            "entries": page.entries,
            "next_cursor": page.next_cursor,
        }
    )


@api_view("GET")
def exam_paper(request: HttpRequest, exam_id: int) -> HttpResponse:
    student_id = authenticated_student_id(request)
    exam = Exam.objects.filter(pk=exam_id).first()
    if exam is None:
        raise ApiError(404, f"no exam {exam_id}")
    now = timezone.now()
    open_session = ExamSession.objects.filter(
        student_id=student_id, exam_id=exam_id, status=ExamSession.IN_PROGRESS
    ).exists()
    if not open_session or exam.status_at(now) != "open":
        raise ApiError(403, "the paper is available only during your open session in the window")
    if not exam.paper:
        raise ApiError(404, "this exam has no paper")
    if settings.PAPER_DELIVERY == "accel":
        # nginx streams the file from an internal location; gunicorn workers stay free.
        resp = HttpResponse(content_type="application/pdf")
        resp["X-Accel-Redirect"] = settings.PAPER_ACCEL_PREFIX + exam.paper.name
        resp["Content-Disposition"] = f'inline; filename="exam-{exam.id}.pdf"'
        return resp
    try:
        handle = exam.paper.open("rb")
    except FileNotFoundError:
        raise ApiError(404, "the paper file is missing on this server") from None
    return FileResponse(handle, content_type="application/pdf", filename=f"exam-{exam.id}.pdf")


@api_view("GET")
def ping(request: HttpRequest) -> JsonResponse:
    """A trivial JSON view: the baseline the save benchmark is compared against."""
    return JsonResponse({"pong": True})
