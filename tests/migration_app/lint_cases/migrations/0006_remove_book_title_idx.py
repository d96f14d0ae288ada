from django.db import migrations


class Migration(migrations.Migration):
    # RemoveIndex: DROP INDEX without CONCURRENTLY.
    dependencies = [("lint_cases", "0005_author_email_not_null")]
    operations = [migrations.RemoveIndex(model_name="book", name="book_title_idx")]
