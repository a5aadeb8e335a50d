//! The Python side of the tests: independent implementations to check ours against.

use std::io::Write;

/// The interpreter the tests use: `$DAVPUSH_PYTHON`, else the virtualenv `cargo xtask test`
/// makes in the workspace (`.venv/`), else `python3`.
pub fn interpreter() -> String {
    if let Ok(py) = std::env::var("DAVPUSH_PYTHON") {
        return py;
    }
    let venv = crate::require::workspace_root().join(".venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// The interpreter ([`interpreter`]) if it can import `modules`. A missing module fails the
/// calling test, or skips it (`None`) when skipping was chosen ([`crate::require`]).
#[track_caller]
pub fn python_with(modules: &[&str]) -> Option<String> {
    let py = interpreter();
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    crate::require::missing(
        &format!("{py} cannot import {modules:?}"),
        "`cargo xtask test` makes a virtualenv with them (requirements-test.txt), or set DAVPUSH_PYTHON",
    );
    None
}

/// Runs the Web Push oracle (`crates/director/tests/interop/webpush.py CMD`) with `stdin`.
pub fn webpush_oracle(py: &str, cmd: &str, stdin: &serde_json::Value) -> Result<serde_json::Value, String> {
    interop(py, "webpush.py", cmd, stdin)
}

/// Runs the push-service oracle (`crates/director/tests/interop/pushsvc.py CMD`: a `pywebpush`
/// sender and an `http_ece` decrypter) with `stdin`.
pub fn pushsvc_oracle(py: &str, cmd: &str, stdin: &serde_json::Value) -> serde_json::Value {
    interop(py, "pushsvc.py", cmd, stdin).unwrap_or_else(|e| panic!("pushsvc.py {cmd}: {e}"))
}

/// Runs `crates/director/tests/interop/<script> CMD` with the JSON `stdin`; its JSON answer.
fn interop(py: &str, script: &str, cmd: &str, stdin: &serde_json::Value) -> Result<serde_json::Value, String> {
    let script = format!("{}/../director/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(py)
        .args([script.as_str(), cmd])
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
