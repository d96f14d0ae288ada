from django.db import migrations, models


class Migration(migrations.Migration):
    # null=True -> null=False on an existing column: SET NOT NULL.
    dependencies = [("lint_cases", "0004_author_email_unique")]
    operations = [
        migrations.AlterField(
            model_name="author", name="email", field=models.CharField(max_length=50)
        ),
    ]
