from django.db import migrations


class Migration(migrations.Migration):
    # One RunSQL without reverse_sql (irreversible), one with.
    dependencies = [("lint_cases", "0007_author_code_no_index")]
    operations = [
        migrations.RunSQL("UPDATE lint_cases_author SET city = 'Riga' WHERE city = ''"),
        migrations.RunSQL(
            "UPDATE lint_cases_author SET nickname = 'x' WHERE nickname = ''",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
