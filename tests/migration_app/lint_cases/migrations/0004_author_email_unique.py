from django.db import migrations, models


class Migration(migrations.Migration):
    # A UniqueConstraint on an existing table: ADD CONSTRAINT ... UNIQUE.
    dependencies = [("lint_cases", "0003_author_name_unique")]
    operations = [
        migrations.AddConstraint(
            model_name="author",
            constraint=models.UniqueConstraint(fields=["email"], name="author_email_uniq"),
        ),
    ]
