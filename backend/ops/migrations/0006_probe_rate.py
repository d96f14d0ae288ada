# ProbeState remembers how fast a probe moves, for the disk fill prediction (issue 19, item 7).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0005_statement_snapshots"),
    ]

    operations = [
        migrations.AddField(
            model_name="probestate",
            name="rate_per_hour",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="probestate",
            name="rate_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
