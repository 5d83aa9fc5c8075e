# Shared set-up for scripts/run and scripts/test. Every step checks before it
# installs, so running either script again is quick and safe.
# shellcheck shell=bash

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$ROOT/end2end/node_modules/.bin:$PATH"
# Start-up errors are reported as messages; a backtrace would only hide them.
export RUST_BACKTRACE=0

CARGO_LEPTOS_VERSION="0.3.10"
APP_DB_NAME="identity_graph_backfill"
PRIVATE_PG_PORT="55432"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_rust() {
  command -v cargo >/dev/null || { echo "error: cargo is not installed; install Rust with rustup first" >&2; exit 1; }
  local channel
  channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
  if ! rustup toolchain list | grep -q "^$channel"; then
    say "installing Rust $channel"
    rustup toolchain install "$channel" --profile minimal --component rustfmt,clippy
  fi
  if ! rustup target list --installed --toolchain "$channel" | grep -q wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown --toolchain "$channel"
  fi
  for component in rustfmt clippy; do
    if ! rustup component list --installed --toolchain "$channel" | grep -q "^$component"; then
      rustup component add "$component" --toolchain "$channel"
    fi
  done
}

ensure_cargo_tools() {
  if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 8 minutes, once)"
    cargo install cargo-leptos@"$CARGO_LEPTOS_VERSION" --locked
  fi
  # The CLI must match the wasm-bindgen crate in Cargo.lock exactly.
  local want
  want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
  if ! wasm-bindgen --version 2>/dev/null | grep -q "$want"; then
    say "installing wasm-bindgen-cli $want (about 3 minutes, once)"
    # --locked fails on a yanked webpki-roots; the unlocked build works.
    cargo install wasm-bindgen-cli@"$want"
  fi
}

ensure_node_modules() {
  command -v npm >/dev/null || { say "installing Node.js"; as_root apt-get install -y nodejs npm; }
  local stamp="end2end/node_modules/.installed-lock"
  if [ ! -f "$stamp" ] || ! cmp -s end2end/package-lock.json "$stamp"; then
    say "installing end-to-end test packages (npm ci)"
    (cd end2end && npm ci --no-audit --no-fund)
    cp end2end/package-lock.json "$stamp"
  fi
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium for the browser tests"
    as_root apt-get install -y chromium || { as_root apt-get update && as_root apt-get install -y chromium; }
  fi
}

# Sets DATABASE_URL: the caller's, else a server on 127.0.0.1:5432, else a
# private cluster under target/.
ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    export DATABASE_URL
    return
  fi
  command -v psql >/dev/null || { say "installing the PostgreSQL client and server"; as_root apt-get install -y postgresql; }
  local user
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for user in "${PGUSER:-$(whoami)}" postgres; do
      if psql -h 127.0.0.1 -p 5432 -U "$user" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
        ensure_database "127.0.0.1" 5432 "$user"
        export DATABASE_URL="postgres://$user@127.0.0.1:5432/$APP_DB_NAME"
        return
      fi
    done
  fi
  start_private_cluster
  ensure_database "127.0.0.1" "$PRIVATE_PG_PORT" postgres
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/$APP_DB_NAME"
}

ensure_database() {
  local host="$1" port="$2" user="$3"
  if ! psql -h "$host" -p "$port" -U "$user" -d postgres -Atqc "select 1 from pg_database where datname = '$APP_DB_NAME'" | grep -q 1; then
    say "creating database $APP_DB_NAME"
    psql -h "$host" -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE $APP_DB_NAME"
  fi
}

start_private_cluster() {
  local bin data="$ROOT/target/pgdata" run_as=()
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bin" ]; then
    say "installing PostgreSQL"
    as_root apt-get install -y postgresql
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  # initdb refuses to run as root; the cluster then belongs to 'postgres'.
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  mkdir -p "$data"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$data"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating a private PostgreSQL cluster in target/pgdata"
    "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p "$PRIVATE_PG_PORT"; then
    say "starting the private PostgreSQL on 127.0.0.1:$PRIVATE_PG_PORT"
    "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p $PRIVATE_PG_PORT -c listen_addresses=127.0.0.1 -k $data" start >/dev/null
  fi
}

ensure_everything() {
  ensure_rust
  ensure_cargo_tools
  ensure_node_modules
  ensure_chromium
  ensure_postgres
}

# cargo-leptos runs the first wasm-opt on PATH for a release build. Debian's
# (binaryen 108) produces a WASM that fails to hydrate; the npm package's
# (end2end/node_modules/.bin, first on PATH above) works.
ensure_binaryen_wasm_opt() {
  local version
  version="$(wasm-opt --version 2>/dev/null || true)"
  case "$version" in
    *"version 1"[3-9][0-9]*) ;;
    *) echo "error: wasm-opt on PATH is '${version:-missing}', expected binaryen 130+ from end2end/node_modules/.bin" >&2; exit 1 ;;
  esac
}
