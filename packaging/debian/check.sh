#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg, starts the Director and the gateway as the
# davpush user exactly as the units' ExecStart lines say (this machine runs no systemd), checks
# both answer, verifies the unit files with systemd-analyze, then purges the package and checks
# that nothing of it is left but the data (/var/lib/davpush) and the davpush user, which Debian
# keeps on purge; finally removes those two as docs/operations.md says. Run as root, on a
# machine where the package is not in use (it takes ports 8080 and 8081 of the default
# configuration). Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"

fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }
step() { echo "-- $*"; }
[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i, a system user)"

# What is named davpush outside the data directory (nothing, before install and after purge).
leftovers() {
    find /etc /usr /var/lib /var/log /run -path /var/lib/davpush -prune -o -name '*davpush*' -print 2>/dev/null | sort
}

# The ```sh block of a Markdown file that contains the line $2 (indentation of blocks in lists
# removed), run as printed: the documentation's commands are the ones tested here.
doc_block() {
    local file=$1 line=$2 block
    block=$(awk -v want="$line" '
        /^ *```sh$/ { inside = 1; match($0, /^ */); indent = RLENGTH; text = ""; found = 0; next }
        inside && /^ *```$/ { inside = 0; if (found) { printf "%s", text; exit } next }
        inside { l = substr($0, indent + 1); text = text l "\n"; if (l == want) found = 1 }
    ' "$file")
    [ -n "$block" ] || fail "$file has no sh block with the line: $line"
    echo "\$ ($file)"; sed 's/^/  /' <<<"$block"
    bash -euo pipefail -c "$block"
}

pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

# A clean machine: the package, user and data an interrupted earlier run left go first.
if dpkg-query -W -f='${Status}' davpush 2>/dev/null | grep -q 'installed'; then
    echo "check.sh: purging the davpush package an earlier run left installed"
    dpkg --purge davpush
fi
for port in 8080 8081; do
    if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
        fail "port $port is taken: the default configuration needs it"
    fi
done
if id davpush >/dev/null 2>&1; then deluser --quiet --system davpush; fi
rm -rf /var/lib/davpush
before=$(leftovers)
[ -z "$before" ] || fail "files named davpush exist before the install:"$'\n'"$before"

step "README: cargo install"
doc_block README.md "cargo install --locked --path crates/cli" | tee "$target/check-version.txt"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
grep -qx "davpush [0-9.]* (commit $commit)" "$target/check-version.txt" || fail "davpush --version does not name commit $commit"
cargo uninstall --quiet davpush

step "docs/operations.md: build and install the package"
doc_block docs/operations.md "packaging/debian/build-deb.sh"
deb=$(ls -t "$target"/debian/davpush_*.deb | head -n1)
size=$(stat -c %s "$target/release/davpush")
echo "$deb: $(stat -c %s "$deb") bytes; binary $size bytes"
[ "$size" -le $((25 * 1024 * 1024)) ] || fail "the binary is $size bytes, more than 25 MiB"
dpkg-query -L davpush >"$target/debian/installed-files"
[ "$(stat -c '%U:%G %a' /var/lib/davpush)" = "davpush:davpush 700" ] || fail "/var/lib/davpush: $(stat -c '%U:%G %a' /var/lib/davpush)"
for f in /etc/davpush/davpush.toml /etc/davpush/gateway.toml; do
    [ "$(stat -c '%U:%G %a' "$f")" = "root:davpush 640" ] || fail "$f: $(stat -c '%U:%G %a' "$f")"
    grep -qx 'data_dir = "/var/lib/davpush"' "$f" || fail "$f: data_dir is not /var/lib/davpush"
    dpkg-query -W -f='${Conffiles}\n' davpush | grep -q " $f " || fail "$f is not a conffile"
done
[ "$(getent passwd davpush | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the davpush user has a login shell"
man -w davpush-serve >/dev/null || fail "no man page davpush-serve(1)"
man -w davpush-gateway >/dev/null || fail "no man page davpush-gateway(1)"
grep -q '_davpush' /usr/share/bash-completion/completions/davpush || fail "no bash completion"
# The reverse-proxy configurations docs/operations.md points to ("Behind a reverse proxy (TLS)"),
# as shipped or gzipped (cargo-deb compresses larger files under /usr/share/doc).
for f in proxy/nginx/davpush.conf proxy/caddy/Caddyfile; do
    doc="/usr/share/doc/davpush/examples/$f"
    { cat "$doc" 2>/dev/null || zcat "$doc.gz" 2>/dev/null; } | cmp -s - "packaging/$f" || fail "$doc is not packaging/$f"
done
[ "$(davpush --version)" = "$("$target/release/davpush" --version)" ] || fail "the installed binary is not the one built"

units=()
for u in davpush davpush-gateway; do
    units+=("$(grep -E "/systemd/system/$u\.service$" "$target/debian/installed-files")")
done
step "systemd-analyze verify ${units[*]}"
if ! out=$(systemd-analyze verify "${units[@]}" 2>&1) || [ -n "$out" ]; then
    fail "systemd-analyze verify: $out"
fi

# ExecStart of a unit, run as its User= with the unit's umask, a clean environment (systemd
# passes none of ours) and no way to gain privileges (NoNewPrivileges, CapabilityBoundingSet=).
start_unit() {
    local unit=$1 log=$2 cmd
    cmd=$(sed -n 's/^ExecStart=//p' "$unit")
    [ "$(sed -n 's/^User=//p' "$unit")" = davpush ] || fail "$unit: User= is not davpush"
    echo "$(basename "$unit"): $cmd"
    # shellcheck disable=SC2086 # ExecStart is split into words, as systemd does (no quotes in it)
    (cd / && umask 0077 && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/davpush \
        USER=davpush LOGNAME=davpush LANG=C.UTF-8 \
        setpriv --reuid=davpush --regid=davpush --init-groups --no-new-privs --bounding-set=-all \
        --inh-caps=-all -- $cmd) >"$log" 2>&1 &
    pids+=($!)
}

# Polls url until it answers 200 (at most 60 s); prints the body.
await_200() {
    local url=$1 log=$2 pid=$3
    for _ in $(seq 1 300); do
        if body=$(curl -sf --max-time 2 "$url"); then printf '%s' "$body"; return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "the process of $url exited"; }
        sleep 0.2
    done
    cat "$log" >&2
    fail "$url did not answer within 60 s"
}

logs="$target/debian/check-logs"
rm -rf "$logs" && mkdir -p "$logs"
# Starts the Director's unit and waits for /healthz.
start_director() {
    start_unit "${units[0]}" "$logs/davpush.log"
    director=${pids[-1]}
    health=$(await_200 http://127.0.0.1:8080/healthz "$logs/davpush.log" "$director")
    echo "Director /healthz: $health"
}

# SIGTERM to $1: it must exit 0.
stop() {
    kill -TERM "$1"
    wait "$1" || fail "exit status $? after SIGTERM (logs in $logs)"
    local kept=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    pids=("${kept[@]}")
}

# POST /notify with the token in file $1: prints the HTTP status.
notify_with() {
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$1")" \
        -H 'Content-Type: application/json' -d '{"topic":"check"}' http://127.0.0.1:8080/notify
}

step "reinstall over itself (the upgrade path: postinst configure with the old version)"
dpkg -i "$deb"
[ "$(stat -c '%U:%G %a' /etc/davpush/davpush.toml)" = "root:davpush 640" ] || fail "reinstall changed /etc/davpush/davpush.toml"

logs="$target/debian/check-logs"
rm -rf "$logs" && mkdir -p "$logs"
step "the Director as its unit starts it"
start_director
[ "$(ps -o user= -p "$director")" = davpush ] || fail "the Director does not run as davpush"
for f in notify-token subscription-token grant-key vapid-key.pem davpush.sqlite; do
    [ "$(stat -c '%U %a' "/var/lib/davpush/$f")" = "davpush 600" ] || fail "/var/lib/davpush/$f: $(stat -c '%U %a' "/var/lib/davpush/$f")"
done
metrics=$(curl -sf http://127.0.0.1:8080/metrics) || fail "no /metrics"
grep -q '^davpush_websocket_connections ' <<<"$metrics" || fail "/metrics has no davpush_websocket_connections:"$'\n'"$metrics"

step "the gateway as its unit starts it (after setting upstream as docs/operations.md says)"
doc_block docs/operations.md "sed -i 's|^upstream = \"\"\$|upstream = \"http://127.0.0.1:5232/\"|' /etc/davpush/gateway.toml"
grep -qx 'upstream = "http://127.0.0.1:5232/"' /etc/davpush/gateway.toml || fail "upstream is not set"
start_unit "${units[1]}" "$logs/gateway.log"
gateway=${pids[-1]}
# Its health under /.davpush/ (the one namespace the gateway keeps from the WebDAV server).
health=$(await_200 http://127.0.0.1:8081/.davpush/healthz "$logs/gateway.log" "$gateway")
echo "gateway /.davpush/healthz: $health"
grep -q '"status":"ok"' <<<"$health" || fail "the gateway's /.davpush/healthz says: $health"
doc_block docs/operations.md "curl -sf http://127.0.0.1:8081/.davpush/healthz"
# Readiness: the Director answers; the upstream (a Radicale on 5232) is not started here, so the
# gateway is ready only if something answers there.
ready=$(curl -s -w ' %{http_code}' http://127.0.0.1:8081/.davpush/readyz)
echo "gateway /.davpush/readyz: $ready"
case "$ready" in
    *'"director":"ok"'*' 200' | *'"down":["upstream"]'*' 503') ;;
    *) fail "the gateway's /.davpush/readyz says: $ready" ;;
esac
gmetrics=$(curl -sf http://127.0.0.1:8081/.davpush/metrics) || fail "no /.davpush/metrics on the gateway"
grep -q '^davpush_gateway_requests_total{' <<<"$gmetrics" || fail "the gateway's metrics lack requests:"$'\n'"$gmetrics"
[ "$(ps -o user= -p "$gateway")" = davpush ] || fail "the gateway does not run as davpush"
[ "$(stat -c '%U %a' /var/lib/davpush/topic-secret)" = "davpush 600" ] || fail "/var/lib/davpush/topic-secret"
[ "$(notify_with /var/lib/davpush/notify-token)" = 202 ] || fail "notify with the generated token refused"

step "online backup (SQLite) while both run"
rm -rf /var/backups/davpush
doc_block docs/operations.md 'sqlite3 /var/lib/davpush/davpush.sqlite ".backup /var/backups/davpush/davpush.sqlite"'
tables=$(sqlite3 /var/lib/davpush/davpush.sqlite .tables)
[ "$(sqlite3 /var/backups/davpush/davpush.sqlite .tables)" = "$tables" ] || fail "the backup lacks tables"
cp /var/lib/davpush/notify-token "$logs/notify-token.backed-up"
secret=$(sha256sum </var/lib/davpush/topic-secret)

step "rotate the notify token"
doc_block docs/operations.md "(umask 077 && openssl rand -hex 32 >/var/lib/davpush/notify-token.next)"
[ "$(stat -c '%U %a' /var/lib/davpush/notify-token.next)" = "davpush 600" ] || fail "notify-token.next"
# Step 2, the edit the document describes.
sed -i '/^\[notify\]$/,/^\[/ s|^token_files = \[\]$|token_files = ["/var/lib/davpush/notify-token", "/var/lib/davpush/notify-token.next"]|' /etc/davpush/davpush.toml
grep -q 'notify-token.next"\]$' /etc/davpush/davpush.toml || fail "cannot set notify.token_files"
stop "$director"
start_director
[ "$(notify_with /var/lib/davpush/notify-token)" = 202 ] || fail "the old token is refused during the rotation"
[ "$(notify_with /var/lib/davpush/notify-token.next)" = 202 ] || fail "the new token is refused during the rotation"
doc_block docs/operations.md "mv /var/lib/davpush/notify-token.next /var/lib/davpush/notify-token"
sed -i '/^\[notify\]$/,/^\[/ s|^token_files = \[.*notify-token.next"\]$|token_files = []|' /etc/davpush/davpush.toml
stop "$director"
start_director
[ "$(notify_with /var/lib/davpush/notify-token)" = 202 ] || fail "the new token is refused after the rotation"
[ "$(notify_with "$logs/notify-token.backed-up")" = 401 ] || fail "the old token is still accepted after the rotation"

step "monitoring: the shipped alert rules, installed and checked as docs/operations.md says"
for f in grafana-dashboard.json prometheus-alerts.yml prometheus.yml; do
    [ -f "/usr/share/doc/davpush/monitoring/$f" ] || fail "the package lacks /usr/share/doc/davpush/monitoring/$f"
done
command -v promtool >/dev/null 2>&1 || fail "promtool is missing (apt-get install prometheus; .ci/run installs it)"
[ -d /etc/prometheus ] || fail "/etc/prometheus is missing (the prometheus package makes it)"
doc_block docs/operations.md "install -m 0644 /usr/share/doc/davpush/monitoring/prometheus-alerts.yml /etc/prometheus/davpush-alerts.yml"
# Not the package's file: the check after the purge below would find it.
rm -f /etc/prometheus/davpush-alerts.yml

step "SIGTERM: both stop cleanly"
stop "$gateway"
stop "$director"

step "restore the backup into an emptied data directory"
rm -rf /var/lib/davpush/*
doc_block docs/operations.md "tar -C /var/lib/davpush -xzf /var/backups/davpush/secrets.tar.gz"
[ "$(sha256sum </var/lib/davpush/topic-secret)" = "$secret" ] || fail "the topic secret was not restored"
start_director
[ "$(sqlite3 /var/lib/davpush/davpush.sqlite .tables)" = "$tables" ] || fail "the restored database lacks tables"
[ "$(notify_with "$logs/notify-token.backed-up")" = 202 ] || fail "the restored token is refused"
stop "$director"

# The PostgreSQL the tests use (DAVPUSH_TEST_POSTGRES, started by .ci/run); required in CI.
if [ -n "${DAVPUSH_TEST_POSTGRES:-}" ] && ! psql -q "$DAVPUSH_TEST_POSTGRES" -c 'select 1' >/dev/null; then
    [ "${CI:-}" != true ] || fail "PostgreSQL at $DAVPUSH_TEST_POSTGRES is unreachable"
    echo "check.sh: PostgreSQL at $DAVPUSH_TEST_POSTGRES is unreachable: its backup commands are NOT checked"
elif [ -n "${DAVPUSH_TEST_POSTGRES:-}" ]; then
    step "PostgreSQL: pg_dump and pg_restore of a scratch database"
    export DATABASE_URL="${DAVPUSH_TEST_POSTGRES%/*}/davpush_check"
    psql -q "$DAVPUSH_TEST_POSTGRES" -c 'DROP DATABASE IF EXISTS davpush_check' -c 'CREATE DATABASE davpush_check'
    # A Director creates its schema there.
    (umask 0077 && exec env DAVPUSH_STORE__URL="$DATABASE_URL" davpush serve --listen 127.0.0.1:8080 \
        --data-dir "$logs/pg-data") >"$logs/davpush-pg.log" 2>&1 &
    pids+=($!)
    pg_director=${pids[-1]}
    await_200 http://127.0.0.1:8080/healthz "$logs/davpush-pg.log" "$pg_director" >/dev/null
    stop "$pg_director"
    pg_tables() { psql -At "$DATABASE_URL" -c "select tablename from pg_tables where schemaname = 'public' order by 1"; }
    pg_before=$(pg_tables)
    grep -qx subscriptions <<<"$pg_before" || fail "no subscriptions table in PostgreSQL: $pg_before"
    doc_block docs/operations.md 'pg_dump --format=custom --file=/var/backups/davpush/davpush.pgdump "$DATABASE_URL"'
    psql -q "$DATABASE_URL" -c 'DROP TABLE subscriptions CASCADE'
    doc_block docs/operations.md 'pg_restore --clean --if-exists --no-owner --dbname="$DATABASE_URL" /var/backups/davpush/davpush.pgdump'
    [ "$(pg_tables)" = "$pg_before" ] || fail "pg_restore did not bring the tables back"
    psql -q "$DAVPUSH_TEST_POSTGRES" -c 'DROP DATABASE davpush_check'
fi
rm -rf /var/backups/davpush

step "dpkg --purge"
dpkg --purge davpush
! dpkg-query -W -f='${Status}' davpush 2>/dev/null | grep -q installed || fail "still installed"
while read -r f; do
    if [ -f "$f" ] || [ -L "$f" ]; then fail "$f is left after purge"; fi
done <"$target/debian/installed-files"
after=$(leftovers)
[ -z "$after" ] || fail "left after purge:"$'\n'"$after"
[ ! -e /etc/davpush ] || fail "/etc/davpush is left after purge"
# What Debian keeps: the data and the user owning it.
[ -s /var/lib/davpush/notify-token ] && [ -s /var/lib/davpush/topic-secret ] || fail "purge removed the data"
id davpush >/dev/null || fail "purge removed the davpush user (the data's owner)"
echo "kept: /var/lib/davpush ($(ls /var/lib/davpush | tr '\n' ' ')) and the user davpush"

step "remove the data and the user as docs/operations.md says"
doc_block docs/operations.md "deluser --system davpush"
! id davpush >/dev/null 2>&1 || fail "the davpush user is left"
! getent group davpush >/dev/null || fail "the davpush group is left"
[ ! -e /var/lib/davpush ] || fail "/var/lib/davpush is left"
echo "check.sh: OK"
