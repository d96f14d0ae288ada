"""What operators act on inside the service: the audit trail, feature flags, job runs and alerts."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One state-changing operation: who, when, what, old -> new, why, and the change set."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True, default="")
    change_set = models.CharField(max_length=36, blank=True, default="", db_index=True)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    host = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["action", "-created_at"], name="audit_action_idx")]


class FeatureFlag(models.Model):
    key = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    owner = models.CharField(max_length=150, blank=True, default="")
    enabled = models.BooleanField(default=False)
    rollout_percent = models.PositiveSmallIntegerField(default=100)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)


class RetentionRun(models.Model):
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    host = models.CharField(max_length=255, blank=True, default="")
    dry_run = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, default="running")
    error = models.TextField(blank=True, default="")
    policies = models.JSONField(default=dict, blank=True)


class ResourceAlert(models.Model):
    WARNING = "warning"
    CRITICAL = "critical"

    probe = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    severity = models.CharField(max_length=16)
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.TextField(blank=True, default="")
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["resolved_at", "probe", "host"], name="alert_open_idx"),
        ]


class ProbeState(models.Model):
    """A probe over its threshold but not yet for the damping interval (per host), so the
    damping survives restarts and every host's state sits in one place."""

    probe = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    pending_severity = models.CharField(max_length=16, blank=True, default="")
    pending_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # How fast the value moves (units per hour, smoothed over about an hour), for the probes
    # whose end is predicted (a disk's hours until full), and since when it has been measured.
    rate_per_hour = models.FloatField(null=True, blank=True)
    rate_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["probe", "host"], name="probestate_probe_host")
        ]


class ScheduledFlagChange(models.Model):
    """A flag change asked for ahead of time (the exam start): applied once, at or after
    ``apply_at``, by ``opsctl flags apply-due`` through the same audited change as by hand."""

    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"
    CANCELLED = "cancelled"

    key = models.CharField(max_length=100)
    value = models.JSONField()
    apply_at = models.DateTimeField()
    reason = models.TextField()
    actor = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, default=PENDING)
    applied_at = models.DateTimeField(null=True, blank=True)
    change_set = models.CharField(max_length=36, blank=True, default="")
    result = models.TextField(blank=True, default="")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=150, blank=True, default="")
    cancel_reason = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["status", "apply_at"], name="flagsched_due_idx")]


class FlagUsage(models.Model):
    """How often a flag was evaluated to one result on one day (UTC), summed over every
    process: each process counts in memory and adds its counts here every few seconds."""

    key = models.CharField(max_length=100)
    result = models.BooleanField()
    day = models.DateField()
    count = models.BigIntegerField(default=0)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "result", "day"], name="flagusage_key_day")
        ]


class StatementSnapshot(models.Model):
    """One reading of pg_stat_statements for this database (``opsctl queries snapshot``), so
    ``queries top --source pg --since`` can subtract and a statement has a history."""

    taken_at = models.DateTimeField(default=timezone.now, db_index=True)
    host = models.CharField(max_length=255, blank=True, default="")
    stats_reset = models.DateTimeField(null=True, blank=True)  # pg_stat_statements_info
    statements = models.PositiveIntegerField(default=0)


class StatementCounters(models.Model):
    """A statement's cumulative counters in one snapshot (summed over the users that ran
    it); its text is kept once, in StatementText."""

    # db_index=False: the unique (snapshot, queryid) index serves lookups by snapshot.
    snapshot = models.ForeignKey(StatementSnapshot, on_delete=models.CASCADE, db_index=False)
    queryid = models.BigIntegerField()
    calls = models.BigIntegerField()
    total_exec_ms = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField(default=0)
    shared_blks_read = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "queryid"], name="stmtcounters_snap_query")
        ]
        indexes = [models.Index(fields=["queryid", "snapshot"], name="stmtcounters_query_idx")]


class StatementText(models.Model):
    """A statement's normalised text and fingerprint, stored when first seen."""

    queryid = models.BigIntegerField(unique=True)
    fingerprint = models.CharField(max_length=16, db_index=True)
    query = models.TextField()
    first_seen_at = models.DateTimeField(default=timezone.now)
