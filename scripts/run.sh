#!/usr/bin/env bash
# `make run`: persistent BigQuery emulator, Django tables, static files, BigQuery bootstrap, admin user,
# then gunicorn in the foreground. Stopping gunicorn (Ctrl-C) stops the emulator too; data stays on disk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-.venv/bin}
EMULATOR_PORT=${EMULATOR_PORT:-9050}
BIND=${BIND:-127.0.0.1:8000}
python="$BIN/python"

# Ask Django for its data directory and BigQuery project, so that values set in the environment or
# in .env are honoured here exactly as the settings honour them (defaults: ./var, convergence-local).
django_settings=$(
    DJANGO_SETTINGS_MODULE=convergence.settings "$python" -c '
from django.conf import settings
from bigquery_backend.emulator import DEFAULT_PROJECT
print(settings.DATA_DIR)
print(settings.BIGQUERY_PROJECT or DEFAULT_PROJECT)'
)
DATA_DIR=${django_settings%%$'\n'*}
project=${django_settings#*$'\n'}
export DATA_DIR
export BIGQUERY_EMULATOR_HOST="http://127.0.0.1:${EMULATOR_PORT}"
emulator_dir="$DATA_DIR/bigquery"

# Before anything starts: refuse a data directory other local accounts can read; the check
# (convergence.E001) names the paths and the chmod that fixes them.
"$python" manage.py check

stop_emulator() {
    "$python" -m bigquery_backend.emulator stop --data-dir "$emulator_dir" || true
}

# Traps first: a signal that arrives while the emulator starts must still stop it. Without the
# INT/TERM/HUP traps bash would die of the signal on the spot and skip the EXIT trap.
trap stop_emulator EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
if ! "$python" -m bigquery_backend.emulator start --data-dir "$emulator_dir" --port "$EMULATOR_PORT" \
    --project "$project"; then
    # A failed start has already stopped what it started (or started nothing, if the port was taken).
    trap - EXIT
    echo "error: could not start the BigQuery emulator on port $EMULATOR_PORT (log: $emulator_dir/emulator.log);" \
        "another one may be running: try EMULATOR_PORT=9051 make run" >&2
    exit 1
fi

"$python" manage.py migrate --noinput
"$python" manage.py collectstatic --noinput
# --update-schema: a data directory from an earlier release gets the NULLABLE columns added since.
"$python" manage.py bootstrap_bigquery --update-schema
"$python" manage.py ensure_admin

# Periodic work (the scheduler every minute, orphan cleanup, the usage rollover after midnight UTC) runs
# beside the portal: the EXIT trap stops it before the emulator it uses. -v 0: its log lines say enough.
"$python" manage.py run_periodic -v 0 &
periodic_pid=$!
stop_periodic() {
    kill -TERM "$periodic_pid" 2>/dev/null || true
    wait "$periodic_pid" 2>/dev/null || true
}
trap 'stop_periodic; stop_emulator' EXIT

# One reference worker (manage.py run_worker) runs the queued pipelines through the worker API, as an
# external worker would, with a worker token made once and kept owner-only in the data directory.
worker_token="$DATA_DIR/worker-token"
if [ ! -s "$worker_token" ]; then
    (umask 077 && "$python" manage.py create_worker_token --username local-worker --name "make run" \
        --create -v 0 > "$worker_token")
fi
"$python" manage.py run_worker --url "http://${BIND}" --token-file "$worker_token" --worker-id local-worker &
worker_pid=$!
stop_worker() {
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
}
trap 'stop_worker; stop_periodic; stop_emulator' EXIT

echo
echo "Portal: http://${BIND}/admin/  (Ctrl-C stops the portal, periodic work, the worker and the BigQuery emulator)"
echo

# gunicorn runs in the background so that this shell can react to a signal at once and pass it on:
# a signal sent only to this shell or to make (not to the whole process group) still stops gunicorn,
# and the EXIT trap above then stops periodic work and the emulator.
"$BIN/gunicorn" convergence.wsgi \
    --config python:convergence.gunicorn_conf \
    --bind "$BIND" \
    --workers 2 \
    --graceful-timeout 10 &
gunicorn_pid=$!
trap 'kill -TERM "$gunicorn_pid" 2>/dev/null || true' INT TERM HUP

status=0
wait "$gunicorn_pid" || status=$?
# A trapped signal interrupts `wait` before gunicorn has finished shutting down: wait for it.
while kill -0 "$gunicorn_pid" 2>/dev/null; do
    wait "$gunicorn_pid" || status=$?
done
exit "$status"
