"""The exam domain.

Hot queries and the indexes that serve them:
- save: session by id joined to its student's token hash (PK + unique token_hash), answer upsert
  on the unique (session, question, part).
- start: session by (student, exam) unique.
- leaderboard: scored sessions of one exam in rank order: ``session_board_*_idx`` (partial).
- retention: journal rows by session (FK index) and sessions by (status, submitted_at).
"""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: a leaked table does not leak working credentials."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Student(models.Model):
    name = models.CharField(max_length=200)
    external_id = models.CharField(max_length=64, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    def set_token(self, token: str | None = None) -> str:
        token = token or new_token()
        self.token_hash = hash_token(token)
        return token


class Exam(models.Model):
    title = models.CharField(max_length=200)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    duration_min = models.PositiveIntegerField()
    paper = models.FileField(upload_to="papers/", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["ends_at", "starts_at"], name="exam_window_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="exam_window_order"
            )
        ]

    def __str__(self) -> str:
        return self.title

    def status_at(self, now) -> str:
        if now < self.starts_at:
            return "upcoming"
        if now >= self.ends_at:
            return "closed"
        return "open"


class AnswerKey(models.Model):
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="keys")
    question = models.PositiveIntegerField()
    part = models.CharField(max_length=16, blank=True, default="")
    correct_value = models.CharField(max_length=500)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["exam", "question", "part"], name="answerkey_unique")
        ]
        ordering = ["question", "part"]


class ExamSession(models.Model):
    IN_PROGRESS = "in_progress"
    SUBMITTED = "submitted"
    EXPIRED = "expired"
    STATUS_CHOICES = [(IN_PROGRESS, IN_PROGRESS), (SUBMITTED, SUBMITTED), (EXPIRED, EXPIRED)]

    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="sessions")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="sessions")
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=IN_PROGRESS)
    started_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    raw_score = models.IntegerField(null=True, blank=True)
    max_score = models.IntegerField(null=True, blank=True)
    ability = models.FloatField(null=True, blank=True)
    ability_se = models.FloatField(null=True, blank=True)
    scaled_score = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["student", "exam"], name="session_student_exam_unique")
        ]
        indexes = [
            # The leaderboard's keyset order, one index per ranking, only over scored rows.
            models.Index(
                fields=["exam", "-raw_score", "submitted_at", "id"],
                name="session_board_raw_idx",
                condition=models.Q(submitted_at__isnull=False),
            ),
            models.Index(
                fields=["exam", "-scaled_score", "submitted_at", "id"],
                name="session_board_scaled_idx",
                condition=models.Q(scaled_score__isnull=False, submitted_at__isnull=False),
            ),
            models.Index(fields=["status", "submitted_at"], name="session_status_submitted_idx"),
        ]


class Answer(models.Model):
    session = models.ForeignKey(ExamSession, on_delete=models.CASCADE, related_name="answers")
    question = models.PositiveIntegerField()
    part = models.CharField(max_length=16, blank=True, default="")
    value = models.CharField(max_length=500)
    seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)
    is_correct = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "question", "part"], name="answer_session_question_part"
            )
        ]


class AnswerEvent(models.Model):
    """Append-only journal of every accepted save: the evidence when a result is disputed."""

    session = models.ForeignKey(
        ExamSession, on_delete=models.DO_NOTHING, related_name="events", db_constraint=False
    )
    question = models.PositiveIntegerField()
    part = models.CharField(max_length=16, blank=True, default="")
    value = models.CharField(max_length=500)
    seq = models.BigIntegerField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["session", "id"], name="answerevent_session_idx")]


class CalibrationRun(models.Model):
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"

    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="calibration_runs")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    method = models.CharField(max_length=32, default="")
    n_persons = models.IntegerField(default=0)
    n_items = models.IntegerField(default=0)
    iterations = models.IntegerField(default=0)
    converged = models.BooleanField(default=False)
    reliability = models.FloatField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=16, default="")
    error = models.TextField(blank=True, default="")
    is_current = models.BooleanField(default=False)
    actor = models.CharField(max_length=150, blank=True, default="")
    # Model checks (issue #20): KR-20 beside separation reliability, Andersen's LR test
    # (median split), and what the operator was warned about.
    kr20 = models.FloatField(null=True, blank=True)
    andersen_lr = models.FloatField(null=True, blank=True)
    andersen_df = models.IntegerField(null=True, blank=True)
    andersen_p = models.FloatField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["exam", "-started_at"], name="calibrun_exam_idx")]


class ItemCalibration(models.Model):
    run = models.ForeignKey(CalibrationRun, on_delete=models.CASCADE, related_name="items")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="item_calibrations")
    question = models.PositiveIntegerField()
    part = models.CharField(max_length=16, blank=True, default="")
    difficulty = models.FloatField(null=True, blank=True)
    difficulty_se = models.FloatField(null=True, blank=True)
    infit = models.FloatField(null=True, blank=True)
    outfit = models.FloatField(null=True, blank=True)
    point_measure = models.FloatField(null=True, blank=True)
    n_responses = models.IntegerField(default=0)
    p_correct = models.FloatField(null=True, blank=True)
    excluded = models.CharField(max_length=32, blank=True, default="")
    infit_zstd = models.FloatField(null=True, blank=True)
    outfit_zstd = models.FloatField(null=True, blank=True)
    wald_z = models.FloatField(null=True, blank=True)  # (high - low half) / SE
    wald_p = models.FloatField(null=True, blank=True)
    flags = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "question", "part"], name="itemcal_unique")
        ]
