//! Records the git commit `davpush --version` prints: `git rev-parse --short HEAD` when this
//! crate is built from a git checkout of davpush, "unknown" otherwise (a source tarball, no git).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The workspace root is two levels up (crates/cli). A tarball unpacked inside some other
    // repository must not report that repository's commit.
    let root = manifest.join("../..").canonicalize().ok();
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| Path::new(&t).canonicalize().ok());
    let commit = match (root, top) {
        (Some(root), Some(top)) if root == top => git(&["rev-parse", "--short", "HEAD"]),
        _ => None,
    };
    // Not DAVPUSH_*: cargo also sets it for `cargo run`/`cargo test`, and the Director reads
    // DAVPUSH_* variables as configuration.
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's ref (a commit), and
    // packed-refs (a gc). In a worktree these live in different git directories; git knows where.
    println!("cargo:rerun-if-changed=build.rs");
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    let mut watched = false;
    for name in watch {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) {
            println!("cargo:rerun-if-changed={p}");
            watched = true;
        }
    }
    // git failed in a checkout (busy, or not installed yet): watch the checkout's `.git` itself,
    // so the next build asks again instead of printing "unknown" until build.rs changes.
    if !watched {
        let dot_git = manifest.join("../../.git");
        if dot_git.exists() {
            println!("cargo:rerun-if-changed={}", dot_git.display());
        }
    }
}
