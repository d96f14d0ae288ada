"""Django's PostgreSQL backend whose connection pool fails fast while the database is down
(``base.py`` says why). settings.py selects it when the pool is on."""
