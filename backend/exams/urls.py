from django.urls import path

from backend.exams import api

urlpatterns = [
    path("exams/", api.exams_list, name="exams-list"),
    path("exams/<int:exam_id>/sessions/", api.session_start, name="session-start"),
    path("exams/<int:exam_id>/paper.pdf", api.exam_paper, name="exam-paper"),
    path("sessions/<int:session_id>/answers/", api.answer_save, name="answer-save"),
    path("sessions/<int:session_id>/submit/", api.session_submit, name="session-submit"),
    path("sessions/<int:session_id>/results/", api.session_results, name="session-results"),
    path("leaderboard/", api.leaderboard_view, name="leaderboard"),
    path("ping/", api.ping, name="ping"),
]
