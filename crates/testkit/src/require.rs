//! What a test does when a tool or service it needs is missing.
//!
//! By default the test **fails**, naming what is missing and how to install it: a test that
//! cannot run has not passed. `cargo xtask test` (the README's test command) provisions what it
//! can without root (the Python virtualenv) and checks the rest before any test runs.
//!
//! Skipping is an explicit choice: `DAVPUSH_ALLOW_SKIP=1` (what `cargo xtask test --allow-skip`
//! sets) makes the test return early instead, with a `SKIPPED` notice on stderr and a line in
//! the file `$DAVPUSH_SKIP_LOG` names, so the summary can count the skipped tests as skipped.
//! In CI (`CI=true`) nothing is ever skipped.

use std::io::Write;
use std::path::PathBuf;

/// Whether missing tools skip tests rather than fail them.
pub fn skipping_allowed() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let allowed = std::env::var("DAVPUSH_ALLOW_SKIP").is_ok_and(|v| v == "1" || v == "true");
    allowed && !ci
}

/// `what` is missing for the calling test; `install` says how to get it (e.g.
/// `apt-get install litmus`). Panics unless skipping is allowed ([`skipping_allowed`]); then
/// records the skip and returns, and the caller returns early.
#[track_caller]
pub fn missing(what: &str, install: &str) {
    let test = test_name();
    if !skipping_allowed() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let why = if ci {
            ".ci/run must provide it"
        } else {
            "run the tests with `cargo xtask test` (it provisions the Python tools and names what \
             else to install), or skip such tests explicitly with `cargo xtask test --allow-skip`"
        };
        panic!("{test}: {what} ({install}); {why}");
    }
    eprintln!("SKIPPED: {test}: {what} ({install})");
    if let Some(log) = std::env::var_os("DAVPUSH_SKIP_LOG") {
        let line = format!("{test}\t{what}\n");
        // Appends of one short line are atomic enough for concurrent test threads and binaries.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// `<package> <test path>`: libtest names each test's thread after the test.
fn test_name() -> String {
    let pkg = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("?");
    if pkg.is_empty() { name.to_owned() } else { format!("{pkg} {name}") }
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
