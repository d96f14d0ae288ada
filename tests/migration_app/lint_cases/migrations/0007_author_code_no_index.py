from django.db import migrations, models


class Migration(migrations.Migration):
    # db_index=True -> False: DROP INDEX without CONCURRENTLY.
    dependencies = [("lint_cases", "0006_remove_book_title_idx")]
    operations = [
        migrations.AlterField(
            model_name="author", name="code", field=models.CharField(max_length=20, default="")
        ),
    ]
