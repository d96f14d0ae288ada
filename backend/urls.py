from django.urls import include, path

from backend.ops import health

urlpatterns = [
    path("api/", include("backend.exams.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]

handler400 = "backend.exams.http.json_handler_400"
handler404 = "backend.exams.http.json_handler_404"
handler500 = "backend.exams.http.json_handler_500"
