"""A test-only app whose migrations exercise the migration guard (added to INSTALLED_APPS
only inside tests/backend/test_schema_changes.py)."""

from django.db import models


class Widget(models.Model):
    name = models.CharField(max_length=50)
    colour = models.CharField(max_length=20, default="red")

    class Meta:
        app_label = "migration_app"
        indexes = [models.Index(fields=["colour"], name="widget_colour_idx")]
