# Scheduled flag changes and per-day flag evaluation counts (issue 19, item 6).

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0003_probe_state"),
    ]

    operations = [
        migrations.CreateModel(
            name="FlagUsage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=100)),
                ("result", models.BooleanField()),
                ("day", models.DateField()),
                ("count", models.BigIntegerField(default=0)),
                ("last_seen_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("key", "result", "day"), name="flagusage_key_day"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ScheduledFlagChange",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=100)),
                ("value", models.JSONField()),
                ("apply_at", models.DateTimeField()),
                ("reason", models.TextField()),
                ("actor", models.CharField(max_length=150)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("status", models.CharField(default="pending", max_length=16)),
                ("applied_at", models.DateTimeField(blank=True, null=True)),
                ("change_set", models.CharField(blank=True, default="", max_length=36)),
                ("result", models.TextField(blank=True, default="")),
                ("cancelled_at", models.DateTimeField(blank=True, null=True)),
                ("cancelled_by", models.CharField(blank=True, default="", max_length=150)),
                ("cancel_reason", models.TextField(blank=True, default="")),
            ],
            options={
                "indexes": [models.Index(fields=["status", "apply_at"], name="flagsched_due_idx")],
            },
        ),
    ]
