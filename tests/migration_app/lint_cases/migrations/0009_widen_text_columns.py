from django.db import migrations, models


class Migration(migrations.Migration):
    # Safe on PostgreSQL (no rewrite, no scan): varchar(n) -> text and a wider varchar.
    dependencies = [("lint_cases", "0008_runsql")]
    operations = [
        migrations.AlterField(
            model_name="author", name="nickname", field=models.TextField(default="")
        ),
        migrations.AlterField(
            model_name="author", name="city", field=models.CharField(max_length=40, default="")
        ),
    ]
