//! The Python side of the tests: independent implementations to check ours against.

use std::io::Write;

/// The interpreter (`$DAVPUSH_PYTHON`, else `python3`) if it can import `modules`. Outside CI a
/// missing module skips the calling test (`None`, with a notice); in CI it fails it.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let py = std::env::var("DAVPUSH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{py} cannot import {modules:?}; .ci/run must install them");
    }
    eprintln!("SKIPPED: {py} cannot import {modules:?} (pip install them, or set DAVPUSH_PYTHON)");
    None
}

/// Runs the Web Push oracle (`crates/director/tests/interop/webpush.py CMD`) with `stdin`.
pub fn webpush_oracle(py: &str, cmd: &str, stdin: &serde_json::Value) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../director/tests/interop/webpush.py");
    let mut child = std::process::Command::new(py)
        .args([script, cmd])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().expect("piped").write_all(stdin.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}
