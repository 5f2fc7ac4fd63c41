#!/usr/bin/env bash
# A long-running Prefect API and UI on this machine (SQLite under $PREFECT_HOME, by default
# ~/.orthoselect/prefect-server: its own, apart from the worker's and from the throwaway server an
# `orthoselect` command starts without PREFECT_API_URL, ~/.orthoselect/prefect), on any PORT:
#
#   infra/prefect-server.sh                          # http://127.0.0.1:4200 (UI) and .../api
#   PORT=4300 infra/prefect-server.sh                # another port: the UI talks to the API on 4300 too
#   HOST=0.0.0.0 UI_API_URL=http://myhost:4200/api infra/prefect-server.sh   # reachable from elsewhere
#
# Then, in every shell that runs a flow (orthoselect run, the process worker, deployments/serve.py):
#   export PREFECT_API_URL=http://127.0.0.1:${PORT:-4200}/api
# Dask workers run library code only and never need it.
#
# The UI (a page in the browser) asks the server for the API address (/ui-settings -> api_url). Prefect
# builds it from PREFECT_SERVER_API_HOST/PORT, or from PREFECT_API_URL if that is set in this shell, not
# from `--port`: without the settings below, a server on 4300 serves a UI that calls 4200 ("Can't connect
# to Server API"). UI_API_URL is the API address as a browser reaches it.
set -euo pipefail
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-4200}"
case "$HOST" in
    0.0.0.0 | :: | "[::]") ui_host="$(hostname -f 2>/dev/null || hostname)" ;;  # a browser cannot call 0.0.0.0
    *) ui_host="$HOST" ;;
esac
export PREFECT_HOME="${PREFECT_HOME:-$HOME/.orthoselect/prefect-server}"   # the history lives here
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1   # no telemetry (offline-safe, quiet)
export PREFECT_SERVER_API_HOST="$HOST" PREFECT_SERVER_API_PORT="$PORT"
export PREFECT_SERVER_UI_API_URL="${UI_API_URL:-http://$ui_host:$PORT/api}"
unset PREFECT_UI_API_URL   # the older name of the same setting: one value only
echo "Prefect UI: http://$ui_host:$PORT  API: $PREFECT_SERVER_UI_API_URL  (PREFECT_HOME=$PREFECT_HOME)"
exec "${VENV:-.venv}/bin/prefect" server start --host "$HOST" --port "$PORT"
