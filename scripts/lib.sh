# Shared set-up for scripts/run and scripts/test (sourced, not run).
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"

say() { printf '%s\n' "$*" >&2; }

find_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    say "overlay-node needs Python >= 3.11 (with venv); none found on PATH"
    return 1
}

# ensure_venv [extras]: create .venv if missing; (re)install when a pyproject.toml
# changed. The node needs the client distribution (client/), installed beside it.
ensure_venv() {
    local extras=${1:-} spec="$REPO" stamp
    [ -n "$extras" ] && spec="$REPO[$extras]"
    stamp="$VENV/.installed${extras:+-$extras}"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$(find_python)" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ] || [ "$REPO/client/pyproject.toml" -nt "$stamp" ]; then
        say "installing overlay-node${extras:+ with $extras extras} into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO/client" -e "$spec"
        touch "$stamp"
    fi
    # .venv/bin also holds py-libp2p's demo commands; this dir holds only ours.
    mkdir -p "$VENV/overlay-bin"
    ln -sf ../bin/overlay-node "$VENV/overlay-bin/overlay-node"
}

# ensure_tool NAME DEBIAN_PACKAGE: install from apt when missing and possible.
# With CI=true a tool that cannot be installed fails the run; otherwise warn.
ensure_tool() {
    local tool=$1 package=$2
    command -v "$tool" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing $package (apt-get)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package") >/dev/null
    fi
    command -v "$tool" >/dev/null 2>&1 && return 0
    if [ "${CI:-}" = true ]; then
        say "error: $tool is required and could not be installed (apt-get install $package)"
        return 1
    fi
    say "warning: $tool is missing (apt-get install $package); tests that need it will fail"
}

# ensure_postgres: the suite's PostgreSQL (OVERLAY_TEST_POSTGRES_URL, default
# postgres@127.0.0.1:5432/test) must answer; start a local cluster if one is
# installed but stopped. With CI=true an unreachable server fails the run.
ensure_postgres() {
    local url=${OVERLAY_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
    local probe="import psycopg,sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()"
    "$VENV/bin/python" -c "$probe" "$url" 2>/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        say "starting the local PostgreSQL cluster"
        for version in $(ls /etc/postgresql 2>/dev/null); do
            pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
        done
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            "$VENV/bin/python" -c "$probe" "$url" 2>/dev/null && return 0
            sleep 1
        done
    fi
    if [ "${CI:-}" = true ]; then
        say "error: PostgreSQL is required at $url (set OVERLAY_TEST_POSTGRES_URL)"
        return 1
    fi
    say "warning: PostgreSQL unreachable at $url; its tests will be skipped"
}

# ensure_npm_deps DIR: install DIR's pinned npm packages (package-lock.json)
# when node_modules is missing or older than the lock file. Node.js and npm
# come from apt when missing. With CI=true a failure fails the run.
ensure_npm_deps() {
    local dir=$1
    ensure_tool node nodejs || return 1
    ensure_tool npm npm || return 1
    command -v npm >/dev/null 2>&1 || return 0
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
        say "installing npm packages for $dir"
        if ! npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null; then
            [ "${CI:-}" = true ] && { say "error: npm ci in $dir failed"; return 1; }
            say "warning: npm ci in $dir failed; the interop tests will be skipped"
        fi
        touch "$dir/node_modules" 2>/dev/null || true
    fi
}
