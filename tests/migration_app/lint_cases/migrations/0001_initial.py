from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Author",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=50)),
                ("email", models.CharField(max_length=50, null=True)),
                ("nickname", models.CharField(max_length=20, default="")),
                ("city", models.CharField(max_length=20, default="")),
                ("code", models.CharField(max_length=20, default="", db_index=True)),
            ],
        ),
        migrations.CreateModel(
            name="Book",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("title", models.CharField(max_length=100)),
            ],
            options={"indexes": [models.Index(fields=["title"], name="book_title_idx")]},
        ),
    ]
