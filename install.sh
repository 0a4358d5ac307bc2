#!/usr/bin/env bash
# Sets up finetower's environment in .venv (or $VENV): the pinned TFX 1.21 stack, the packages
# whose declared pins cannot be met together installed with --no-deps, TFDV's missing module,
# graphviz for the model plot, and this repository itself (editable, so Beam workers and the
# tfx CLI import pipeline/ and components/ from anywhere).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  command -v dot >/dev/null || missing="$missing graphviz"
  command -v redis-server >/dev/null || missing="$missing redis-server"
  # the gs:// tests' GCS API server: a TLS certificate, a private namespace's loopback
  command -v openssl >/dev/null || missing="$missing openssl"
  command -v ip >/dev/null || missing="$missing iproute2"
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r requirements.txt
"$VENV/bin/pip" install -q --no-deps -r requirements-nodeps.txt
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp tools/tfdv_sql_util_shim.py "$site/_finetower_tfdv_sql_util_shim.py"
echo "import _finetower_tfdv_sql_util_shim" > "$site/finetower-tfdv-sql-util-shim.pth"
"$VENV/bin/python" -c 'import tensorflow_data_validation, tfx.components' \
  || { echo "install.sh: TFX does not import in $VENV" >&2; exit 1; }
echo "finetower environment ready in $VENV"
