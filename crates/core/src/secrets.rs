//! Secret files (tokens, keys): created once, readable only by their owner.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `content` and mode 0600; fails if it exists (a secret is never
/// overwritten), and syncs it to disk before returning. The file appears whole or not at all
/// (written beside it, then linked into place), so a process that waits for it (a gateway
/// started with the Director) never reads it half-written.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        // Fails with AlreadyExists when `path` exists: never overwritten.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_private_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("davpush-secret-{}", crate::ids::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        super::write_private(&p, "x\n").unwrap();
        assert!(super::write_private(&p, "y\n").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
