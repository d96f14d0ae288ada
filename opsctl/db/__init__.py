"""opsctl's database layer (SQLAlchemy, no Django): one place that turns a URL into an engine
and a connection (``engine``), and what runs on them: table/index health and VACUUM
(``health``), pg_stat_statements (``statements``)."""
