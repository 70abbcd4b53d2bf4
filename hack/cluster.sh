#!/usr/bin/env bash
# hack/cluster.sh up|down|status [flags] — the local control plane (local_stack/cluster.py).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -x "$root/.venv/bin/python" ]; then
  make -C "$root" venv >&2
fi
exec "$root/.venv/bin/python" -m local_stack.cluster "$@"
