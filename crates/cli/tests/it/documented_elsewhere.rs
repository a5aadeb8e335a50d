//! Shell blocks of the docs that tests in other files run (see `documented.rs`): file, first
//! command line, the test that runs it.

const LISTEN: &str =
    "davpush listen https://dav.example.org/alice/calendar/ --user alice --password-file pw --exec 'vdirsyncer sync'";
const LISTEN_TEST: &str = "listen_readme::issue_12_the_readme_listen_command_runs_its_exec_with_only_a_webdav_account";

const POPULATION: &str =
    "davpush bench population --count 2000 --topics 100 --big-topic 200 --expired 5000 --data-dir bench-population";

pub(crate) const CLAIMS: &[(&str, &str, &str)] = &[
    ("README.md", LISTEN, LISTEN_TEST),
    ("docs/clients.md", LISTEN, LISTEN_TEST),
    ("README.md", POPULATION, "durable::issue_11_bench_population_reports_every_figure"),
];
