from django.db import migrations, models


class Migration(migrations.Migration):
    # A unique field added to an existing table: ADD COLUMN ... UNIQUE.
    dependencies = [("lint_cases", "0009_widen_text_columns")]
    operations = [
        migrations.AddField(
            model_name="author",
            name="slug",
            field=models.CharField(max_length=20, null=True, unique=True),
        ),
    ]
