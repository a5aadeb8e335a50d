//! Issue 13 (install): `davpush --version` names the version and the git commit it was built
//! from; the man pages and shell completions the Debian package ships are generated from the
//! command line itself and describe it.

use std::path::Path;
use std::process::Command;

fn davpush(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_davpush")).args(args).output().unwrap();
    assert!(out.status.success(), "davpush {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `git <args>` in this crate's directory, if git is there and answers.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

#[test]
fn issue_13_version_names_the_version_and_the_git_commit() {
    let out = String::from_utf8(davpush(&["--version"]).stdout).unwrap();
    let expected_commit = {
        // build.rs reports the commit only when the workspace root is the checkout's top level.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
        let top = git(&["rev-parse", "--show-toplevel"]).map(|t| Path::new(&t).canonicalize().unwrap());
        match top {
            Some(top) if top == root => git(&["rev-parse", "--short", "HEAD"]).unwrap(),
            _ => "unknown".to_owned(),
        }
    };
    assert_eq!(out, format!("davpush {} (commit {expected_commit})\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn issue_13_man_pages_describe_the_subcommands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    davpush(&["manual", man.to_str().unwrap()]);
    let page = |name: &str| std::fs::read_to_string(man.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let version = format!("\"davpush {}", env!("CARGO_PKG_VERSION"));
    let top = page("davpush.1");
    assert!(top.contains(".TH davpush 1 ") && top.contains(&version), "{top}");
    assert!(top.contains("davpush\\-serve(1)") && top.contains("davpush\\-gateway(1)"), "{top}");
    let serve = page("davpush-serve.1");
    assert!(serve.contains(".TH davpush-serve 1 ") && serve.contains(&version), "{serve}");
    assert!(serve.contains("\\-\\-dump\\-config"), "{serve}");
    let gateway = page("davpush-gateway.1");
    assert!(gateway.contains("\\-\\-upstream"), "{gateway}");
    // The hidden generator documents nothing, and no page is left out.
    assert!(!man.join("davpush-manual.1").exists());
    let pages = std::fs::read_dir(&man).unwrap().count();
    assert_eq!(
        pages,
        1 + ["serve", "bench", "gateway", "relay", "topic", "notify", "grant", "listen", "vapid", "completions"].len()
    );
    // man(1) itself renders it (when installed).
    if let Ok(out) = Command::new("man").arg("-l").arg(man.join("davpush-gateway.1")).env("MANPAGER", "cat").output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--upstream"), "{text}");
    }
}

#[test]
fn issue_13_bash_completion_completes_subcommands_and_flags() {
    let script = String::from_utf8(davpush(&["completions", "bash"]).stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("davpush.bash");
    std::fs::write(&file, script).unwrap();
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {:?}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _davpush davpush \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display().to_string()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("davpush ga");
    assert_eq!(subcommands.trim(), "gateway");
    let flags = complete("davpush gateway --ups");
    assert_eq!(flags.trim(), "--upstream");
}

#[test]
fn issue_13_the_units_allow_more_descriptors_than_websocket_connections() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("examples/davpush.toml")).unwrap();
    let (_, websocket) = example.split_once("\n[websocket]\n").unwrap();
    let max_connections: i64 =
        websocket.lines().find_map(|l| l.strip_prefix("max_connections = ")).unwrap().parse().unwrap();
    for unit in ["davpush.service", "davpush-gateway.service"] {
        let text = std::fs::read_to_string(root.join("packaging/systemd").join(unit)).unwrap();
        let limit: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .unwrap_or_else(|| panic!("{unit} sets no LimitNOFILE"))
            .parse()
            .unwrap();
        assert!(limit > max_connections, "{unit}: LimitNOFILE={limit} is not above websocket.max_connections");
        assert!(text.lines().any(|l| l == "Type=notify"), "{unit}");
    }
}
