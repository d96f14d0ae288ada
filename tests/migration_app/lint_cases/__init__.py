"""A test-only app (label ``lint_cases``) whose migrations are the cases the migration linter
must recognise in the SQL Django really writes: each migration holds one kind of change to an
existing table. Added to INSTALLED_APPS only inside tests/backend/test_migration_lint.py; it
has no models module (only the migrations matter)."""
