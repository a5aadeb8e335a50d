//! Secret files (tokens, keys): created once, readable only by their owner.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `content` and mode 0600; fails if it exists (a secret is never
/// overwritten), and syncs it to disk before returning.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
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
