import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # A ForeignKey added to an existing table: Django writes the constraint inline
    # (ADD COLUMN ... REFERENCES ... DEFERRABLE INITIALLY DEFERRED).
    dependencies = [("lint_cases", "0001_initial")]
    operations = [
        migrations.AddField(
            model_name="book",
            name="author",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.CASCADE, to="lint_cases.author"
            ),
        ),
    ]
