from django.db import migrations, models


class Migration(migrations.Migration):
    # unique=True on an existing column: ADD CONSTRAINT ... UNIQUE.
    dependencies = [("lint_cases", "0002_book_author")]
    operations = [
        migrations.AlterField(
            model_name="author", name="name", field=models.CharField(max_length=50, unique=True)
        ),
    ]
