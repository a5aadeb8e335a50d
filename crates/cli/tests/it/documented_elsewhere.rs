//! Shell blocks of the docs that tests in other files run (see `documented.rs`): file, first
//! command line, the test that runs it.

const LISTEN: &str =
    "davpush listen https://dav.example.org/alice/calendar/ --user alice --password-file pw --exec 'vdirsyncer sync'";
const LISTEN_TEST: &str = "listen_readme::issue_12_the_readme_listen_command_runs_its_exec_with_only_a_webdav_account";

/// packaging/debian/check.sh, run by .ci/run as root: it installs, starts, backs up and purges
/// the Debian package on the CI machine, each step a block of these docs run as printed.
const CHECK_SH: &str = "packaging/debian/check.sh (run by .ci/run)";

const POPULATION: &str =
    "davpush bench population --count 2000 --topics 100 --big-topic 200 --expired 5000 --data-dir bench-population";

const PUSH_BENCH: &str = "davpush bench push-service --clients 200 --senders 8 --secs 2 --data-dir bench-push-service";

const SABREDAV_RECIPE: &str = "php_recipes::issue_14_the_sabredav_outbox_recipe_notifies_subscribers_of_the_gateway";
const DAVICAL_RECIPE: &str = "php_recipes::issue_14_the_davical_trigger_recipe_notifies_subscribers_of_the_gateway";

pub(crate) const CLAIMS: &[(&str, &str, &str)] = &[
    (
        "docs/servers.md",
        "cat > /var/lib/xandikos/post-commit <<'EOF'",
        "xandikos_recipe::issue_14_the_xandikos_git_hook_recipe_notifies_subscribers_of_the_gateway",
    ),
    (
        "docs/operations.md",
        "davpush vapid rotate --data-dir davpush-data",
        "vapid::issue_15_rotate_the_vapid_key_as_operations_md_prints_it",
    ),
    ("README.md", LISTEN, LISTEN_TEST),
    ("docs/clients.md", LISTEN, LISTEN_TEST),
    ("README.md", POPULATION, "durable::issue_11_bench_population_reports_every_figure"),
    (
        "README.md",
        crate::bench_fanout::README_COMMAND,
        "bench_fanout::issue_17_bench_fanout_measures_the_director_and_the_baseline_alike",
    ),
    ("README.md", PUSH_BENCH, "push_bench::issue_16_bench_push_service_counts_add_up"),
    ("README.md", "cargo install --locked --path crates/cli", CHECK_SH),
    ("docs/operations.md", "packaging/debian/build-deb.sh", CHECK_SH),
    (
        "docs/operations.md",
        "sed -i 's|^upstream = \"\"$|upstream = \"http://127.0.0.1:5232/\"|' /etc/davpush/gateway.toml",
        CHECK_SH,
    ),
    ("docs/operations.md", "install -d -m 0700 /var/backups/davpush", CHECK_SH),
    ("docs/operations.md", "  curl -sf http://127.0.0.1:8081/.davpush/healthz", CHECK_SH),
    ("docs/operations.md", "tar -C /var/lib/davpush -xzf /var/backups/davpush/secrets.tar.gz", CHECK_SH),
    (
        "docs/operations.md",
        "pg_dump --format=custom --file=/var/backups/davpush/davpush.pgdump \"$DATABASE_URL\"",
        CHECK_SH,
    ),
    (
        "docs/operations.md",
        "pg_restore --clean --if-exists --no-owner --dbname=\"$DATABASE_URL\" /var/backups/davpush/davpush.pgdump",
        CHECK_SH,
    ),
    ("docs/operations.md", "   (umask 077 && openssl rand -hex 32 >/var/lib/davpush/notify-token.next)", CHECK_SH),
    ("docs/operations.md", "   mv /var/lib/davpush/notify-token.next /var/lib/davpush/notify-token", CHECK_SH),
    ("docs/operations.md", "dpkg --purge davpush", CHECK_SH),
    (
        "docs/operations.md",
        "install -m 0644 /usr/share/doc/davpush/monitoring/prometheus-alerts.yml /etc/prometheus/davpush-alerts.yml",
        CHECK_SH,
    ),
    (
        "docs/operations.md",
        crate::proxy_tls::LISTEN,
        "proxy_tls::issue_13_the_documented_listen_command_receives_a_change_through_nginx_with_a_private_ca",
    ),
    ("docs/servers.md", "sqlite3 /srv/sabredav/db.sqlite <<'EOF'", SABREDAV_RECIPE),
    ("docs/servers.md", "db=/srv/sabredav/db.sqlite", SABREDAV_RECIPE),
    ("docs/servers.md", "psql -d davical <<'EOF'", DAVICAL_RECIPE),
    (
        "docs/servers.md",
        "psql -d davical -qXAt -c 'SELECT max(id), path FROM davpush_outbox GROUP BY path' |",
        DAVICAL_RECIPE,
    ),
];
