from django.db import migrations, models


class Migration(migrations.Migration):
    # A plain AddIndex on an existing table: a SHARE lock while it builds. The guard must flag it.
    dependencies = [("migration_app", "0001_initial")]
    operations = [
        migrations.AddIndex(
            model_name="widget",
            index=models.Index(fields=["colour"], name="widget_colour_idx"),
        ),
    ]
