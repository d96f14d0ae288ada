#!/usr/bin/env bash
# Make the local PostgreSQL ready for the project: pg_stat_statements preloaded (restart
# needed once) and created in the target database, HypoPG installed and created. Safe to run
# again: it changes nothing when everything is already in place. Usage: scripts/pg-setup.sh [DATABASE_URL]
set -euo pipefail
URL="${1:-${OPS_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}}"
if ! psql "$URL" -Atqc "select 1" >/dev/null 2>&1; then
  echo "pg-setup: PostgreSQL at ${URL%%@*}@... does not answer; skipping" >&2
  exit 0
fi
loaded=$(psql "$URL" -Atqc "show shared_preload_libraries")
if [[ "$loaded" != *pg_stat_statements* ]]; then
  new="pg_stat_statements${loaded:+,$loaded}"
  psql "$URL" -qc "ALTER SYSTEM SET shared_preload_libraries = '$new'"
  if command -v pg_ctlcluster >/dev/null && [[ "$URL" == *@127.0.0.1* || "$URL" == *@localhost* ]]; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    echo "pg-setup: restarting local PostgreSQL $version to load pg_stat_statements" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart
    for _ in $(seq 1 30); do psql "$URL" -Atqc "select 1" >/dev/null 2>&1 && break; sleep 1; done
  else
    echo "pg-setup: restart PostgreSQL to load pg_stat_statements" >&2
  fi
fi
# HypoPG (hypothetical indexes: `opsctl explain` proves an index suggestion with it before
# giving it) is a Debian package per PostgreSQL major version, installed on the server's host.
major=$(psql "$URL" -Atqc "select current_setting('server_version_num')::int / 10000")
hypopg=0
if psql "$URL" -Atqc "select 1 from pg_available_extensions where name = 'hypopg'" | grep -q 1; then
  hypopg=1
elif [[ "$URL" == *@127.0.0.1* || "$URL" == *@localhost* ]] && command -v apt-get >/dev/null; then
  if "$(dirname "$0")/ensure-debs.sh" "postgresql-$major-hypopg"; then
    hypopg=1
  else
    echo "pg-setup: could not install postgresql-$major-hypopg; index advice stays unverified" >&2
  fi
else
  echo "pg-setup: install postgresql-$major-hypopg on the database host for verified index advice" >&2
fi
# In template1, so every database created later (test databases included) has them.
for db in template1 "$(psql "$URL" -Atqc 'select current_database()')"; do
  psql "${URL%/*}/$db" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null || true
  if ((hypopg)); then
    psql "${URL%/*}/$db" -qc "CREATE EXTENSION IF NOT EXISTS hypopg" 2>/dev/null || true
  fi
done
# `opsctl explain --analyze` executes the statement as this role: it can read every table
# (pg_read_all_data) and cannot signal backends, reset statistics or create replication slots.
# Roles are per cluster, so test databases created later see it too.
psql "$URL" -q <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'opsctl_explain') THEN
    CREATE ROLE opsctl_explain NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
  END IF;
END $$;
GRANT pg_read_all_data TO opsctl_explain;
SQL
