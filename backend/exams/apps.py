from django.apps import AppConfig


class ExamsConfig(AppConfig):
    name = "backend.exams"
    label = "exams"
    default_auto_field = "django.db.models.BigAutoField"
