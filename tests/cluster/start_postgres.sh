#!/usr/bin/env bash
# Starts Debian's PostgreSQL (installing it if needed) with a database for MLflow's backend, like the compose
# stack's postgres service, and prints the URI for BAP_TEST_POSTGRES_URI (tests/cluster use it). Needs root,
# as CI has. Safe to run again: it reuses the cluster and recreates the database (closing any open session).
#   export BAP_TEST_POSTGRES_URI=$(bash tests/cluster/start_postgres.sh)
set -euo pipefail

DB=bap_mlflow_test
ROLE=bap_test

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1) || {
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >&2
    read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
}
# Debian's default configuration listens on localhost only.
if [ "$status" != online ]; then
    # After an unclean stop pg_ctlcluster can report failure while the server recovers and comes up: trust the
    # cluster's status, not the exit code.
    pg_ctlcluster "$version" "$cluster" start >&2 || sleep 3
    read -r _ _ _ status _ < <(pg_lsclusters --no-header "$version" "$cluster")
    [ "$status" = online ] || { echo "PostgreSQL $version/$cluster did not start (see above)" >&2; exit 1; }
fi

# A password made here, for this run only: nothing secret is stored in the repository.
password=$(python3 -c "import secrets; print(secrets.token_hex(16))")
PGOPTIONS="--client-min-messages=warning" runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<SQL
DROP DATABASE IF EXISTS $DB WITH (FORCE);
DROP ROLE IF EXISTS $ROLE;
CREATE ROLE $ROLE LOGIN PASSWORD '$password';
CREATE DATABASE $DB OWNER $ROLE;
SQL
# +psycopg2: the driver the image installs (SQLAlchemy 2.1 would choose psycopg 3 for postgresql://).
echo "postgresql+psycopg2://$ROLE:$password@127.0.0.1:$port/$DB"
