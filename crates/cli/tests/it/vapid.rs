//! `davpush vapid rotate` and `vapid list` as docs/operations.md prints them (issue 15).

use crate::documented::{Sandbox, block};

#[test]
fn issue_15_rotate_the_vapid_key_as_operations_md_prints_it() {
    let Some(sb) = Sandbox::new() else { return };
    let (old, _) = sb.run("davpush vapid --data-dir davpush-data\n", &[]);
    let old = old.trim().to_owned();
    let b = block("docs/operations.md", "davpush vapid rotate --data-dir davpush-data");
    let (out, err) = sb.run(&sb.script(&b), &[]);
    let mut lines = out.lines();
    let new = lines.next().unwrap().to_owned();
    assert_eq!(new.len(), 87, "the new public key first: {out}");
    assert_ne!(new, old);
    assert!(err.contains("0 key-rotation message(s) queued"), "{err}");
    assert!(!err.contains("PRIVATE"), "no key material on stderr: {err}");
    // `list`: the advertised key, and the retired one (no subscription uses it).
    let advertised = lines.next().unwrap();
    assert!(advertised.contains(&format!(" advertised {new}")), "{out}");
    let retired = lines.next().unwrap();
    assert!(retired.ends_with(&format!(" retired, unused {old}")), "{out}");
    assert!(lines.next().is_none(), "{out}");
    let (now, _) = sb.run("davpush vapid --data-dir davpush-data\n", &[]);
    assert_eq!(now.trim(), new, "`davpush vapid` prints the new key");
    let retired_dir = sb.dir.path().join("davpush-data/vapid-keys");
    assert_eq!(std::fs::read_dir(retired_dir).unwrap().count(), 1, "the old key is kept until the Director starts");
}
