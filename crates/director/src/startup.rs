//! Start-up, the step after validation and before the server listens: [`Config::prepare`]
//! creates the data directory, reads token files, generates the secrets that are missing (mode
//! 0600: the Notify and Subscription API tokens, the grant key, the VAPID key) and builds the
//! WebDAV verifier. Validation ([`Config::from_raw`]) and `--dump-config` never get here, so
//! they create no file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use davpush_delivery::webpush::vapid::VapidKey;

use crate::config::{AuthMode, Config, ConfigError, Secret, TokenSource, check_token, invalid};
use crate::http::webdav_auth::WebdavVerifier;

/// How clients authenticate to the Subscription API and WebSocket endpoint.
#[derive(Debug, Clone)]
pub enum SubscriptionAuth {
    /// One of these bearer tokens (a token shared by many clients is the draft's
    /// "pseudo-public token").
    Tokens(Vec<Secret>),
    /// The draft's "same authentication as for WebDAV": the client's `Authorization` is
    /// verified against a WebDAV server (cached briefly, never stored); the configured tokens
    /// are accepted too (for gateways that subscribe on behalf of users).
    Webdav(Arc<WebdavVerifier>, Vec<Secret>),
    /// No authentication (development only; warned about loudly at start).
    None,
}

/// What start-up adds to a [`Config`]: its secrets, keys and verifier.
#[derive(Debug, Clone)]
pub struct Startup {
    /// Accepted Notify API tokens (never empty).
    pub notify_tokens: Vec<Secret>,
    /// Subscription API authentication.
    pub subscription_auth: SubscriptionAuth,
    /// Admin view tokens (never empty), when `admin.enabled`.
    pub admin_tokens: Option<Vec<Secret>>,
    /// The grant keys, when subscriptions need grants (`subscription.grants = "required"`).
    pub grant_keys: Option<davpush_proto::GrantKeys>,
    /// The VAPID key pair in `web_push.vapid_key_file` at start, when Web Push is enabled. It
    /// seeds an empty store; after that the store's keys are the ones signed with and
    /// advertised (`AppState::vapid`, `davpush_director::vapid`), and the file follows them.
    pub vapid_key: Option<Arc<VapidKey>>,
    /// Retired VAPID keys in `vapid-keys/` next to the key file at start (seeds, likewise).
    pub vapid_retired: Vec<Arc<VapidKey>>,
    /// Secret files generated now (printed once by the binary, by location).
    pub generated_secrets: Vec<(&'static str, PathBuf)>,
}

impl Config {
    /// Creates the data directory if needed, reads or generates the secrets and builds the
    /// WebDAV verifier. Secrets found from an earlier start are reused. Everything that can be
    /// read is read (and checked) before the first secret is generated, so a start that fails
    /// leaves no new secret behind.
    pub fn prepare(&self) -> Result<Startup, ConfigError> {
        if self.needs_data_dir {
            self.data_dir_ready()?;
        }
        let vapid_file = self.web_push.as_ref().map(|w| w.vapid_key_file.as_path());
        let vapid_key = match vapid_file {
            Some(path) if path.exists() => Some(load_vapid(path)?.0),
            _ => None,
        };
        let vapid_retired = match vapid_file {
            Some(path) => davpush_delivery::webpush::keyring::load_retired(path)
                .map_err(|e| invalid("web_push.vapid_key_file", e.to_string()))?
                .into_iter()
                .map(Arc::new)
                .collect(),
            None => Vec::new(),
        };
        let mut notify_tokens = tokens(&self.notify_tokens)?;
        let mut admin_tokens = self.admin_tokens.as_ref().map(tokens).transpose()?;
        let auth = &self.subscription_auth;
        let mut subscription_tokens = match auth.mode {
            AuthMode::None => Vec::new(),
            AuthMode::Token | AuthMode::Webdav => tokens(&auth.tokens)?,
        };
        let verifier = match auth.mode {
            AuthMode::Webdav => {
                // Validation made sure of the URL.
                let url = auth.webdav_url.clone().ok_or_else(|| invalid("subscription.webdav_url", "is required"))?;
                let verifier = WebdavVerifier::new(
                    url,
                    auth.webdav_cache,
                    std::time::Duration::from_secs(self.request_timeout_secs),
                )
                .map_err(|e| invalid("subscription.webdav_url", e.to_string()))?;
                Some(Arc::new(verifier))
            }
            AuthMode::Token | AuthMode::None => None,
        };
        // The key file exists in both modes, so a gateway sharing the data directory can start
        // (and sign) whatever the Director's setting.
        let mut keys = read_grant_keys(&self.grant_key_file)?;
        if self.needs_data_dir {
            self.private_database()?;
        }

        // Everything read: generate what is missing.
        let mut generated = Vec::new();
        let vapid_key = match (vapid_key, vapid_file) {
            (Some(key), _) => Some(Arc::new(key)),
            (None, None) => None,
            (None, Some(path)) => {
                let (key, created) = load_vapid(path)?;
                if created {
                    generated.push(("web_push.vapid_key_file", path.to_owned()));
                }
                Some(Arc::new(key))
            }
        };
        if notify_tokens.is_empty() {
            notify_tokens.push(generate_token(&self.notify_tokens, &mut generated)?);
        }
        if let (Some(source), Some(t)) = (&self.admin_tokens, &mut admin_tokens)
            && t.is_empty()
        {
            t.push(generate_token(source, &mut generated)?);
        }
        if auth.mode != AuthMode::None && subscription_tokens.is_empty() {
            subscription_tokens.push(generate_token(&auth.tokens, &mut generated)?);
        }
        if keys.is_none() {
            keys = Some(generate_grant_keys(&self.grant_key_file, &mut generated)?);
        }
        let subscription_auth = match (auth.mode, verifier) {
            (AuthMode::None, _) => SubscriptionAuth::None,
            // The tokens are for gateways that subscribe on behalf of users they authenticated.
            (_, Some(verifier)) => SubscriptionAuth::Webdav(verifier, subscription_tokens),
            (_, None) => SubscriptionAuth::Tokens(subscription_tokens),
        };
        Ok(Startup {
            notify_tokens,
            subscription_auth,
            admin_tokens,
            grant_keys: if self.grants_required { keys } else { None },
            vapid_key,
            vapid_retired,
            generated_secrets: generated,
        })
    }

    /// Creates the data directory if it is missing and makes sure davpush may write in it;
    /// the errors say which of "a file is in the way", "permission denied" and "read-only file
    /// system" it is (exit 73).
    fn data_dir_ready(&self) -> Result<(), ConfigError> {
        let dir = &self.data_dir;
        let fail =
            |problem: String| ConfigError::DataDir { path: dir.clone(), origin: self.data_dir_origin.clone(), problem };
        if dir.exists() && !dir.is_dir() {
            return Err(fail("it is a file, not a directory".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {}", describe_io(&e))))?;
        // Creating a directory that exists succeeds whatever its mode: try to write in it.
        let probe = dir.join(format!(".davpush-write-check-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| fail(format!("cannot write in it: {}", describe_io(&e))))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// The default SQLite database holds Web Push keys and endpoints: it is created mode 0600
    /// (empty: SQLite makes it a database when it opens it)
    /// and SQLite gives its `-wal` and `-shm` files the database's mode; one from an earlier
    /// version is made 0600.
    fn private_database(&self) -> Result<(), ConfigError> {
        let path = self.data_dir.join(DATABASE_FILE);
        if self.store_url != format!("sqlite://{}", path.display()) {
            return Ok(());
        }
        let fail = |source| ConfigError::Secret { key: "store.url", path: path.clone(), source };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    for suffix in ["", "-wal", "-shm"] {
                        let p = PathBuf::from(format!("{}{suffix}", path.display()));
                        match std::fs::metadata(&p) {
                            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
                            }
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
            Err(e) => Err(fail(e)),
        }
    }
}

/// The default database's file name in the data directory.
pub const DATABASE_FILE: &str = "davpush.sqlite";

/// What an I/O error means to an operator.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "{e}: the user davpush runs as may not write there (or in the directory above, to create it); \
             change the owner or mode, or choose another directory"
        ),
        ErrorKind::ReadOnlyFilesystem => format!("{e}: choose a directory on a writable file system"),
        ErrorKind::NotADirectory => format!("{e}: a part of the path is a file, not a directory"),
        _ => e.to_string(),
    }
}

/// Reads (or generates) the VAPID key at `path`.
fn load_vapid(path: &Path) -> Result<(VapidKey, bool), ConfigError> {
    VapidKey::load_or_create(path).map_err(|e| invalid("web_push.vapid_key_file", e.to_string()))
}

/// The inline tokens, those in files, and else the one generated at an earlier start (if any).
fn tokens(source: &TokenSource) -> Result<Vec<Secret>, ConfigError> {
    let key = source.key;
    let mut out = source.inline.clone();
    for f in &source.files {
        let s = std::fs::read_to_string(f).map_err(|source| ConfigError::Secret { key, path: f.clone(), source })?;
        out.push(check_token(key, s.trim().to_owned())?);
    }
    if out.is_empty() {
        let path = &source.generated;
        match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => out.push(Secret(s.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Secret { key, path: path.clone(), source }),
        }
    }
    Ok(out)
}

/// Creates `source.generated` (mode 0600) with a fresh random token.
fn generate_token(source: &TokenSource, generated: &mut Vec<(&'static str, PathBuf)>) -> Result<Secret, ConfigError> {
    let (key, path) = (source.key, &source.generated);
    let token = davpush_core::ids::random_token(32);
    davpush_core::secrets::write_private(path, &format!("{token}\n")).map_err(|source| ConfigError::Secret {
        key,
        path: path.clone(),
        source,
    })?;
    generated.push((key, path.to_owned()));
    Ok(Secret(token))
}

const GRANT_KEY: &str = "subscription.grant_key_file";

/// Reads the grant keys in `path`; `None` if the file does not exist.
fn read_grant_keys(path: &Path) -> Result<Option<davpush_proto::GrantKeys>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => davpush_proto::GrantKeys::parse(&text)
            .map(Some)
            .map_err(|e| invalid(GRANT_KEY, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Secret { key: GRANT_KEY, path: path.into(), source }),
    }
}

/// Creates the grant key file (mode 0600) with a fresh key.
fn generate_grant_keys(
    path: &Path,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<davpush_proto::GrantKeys, ConfigError> {
    let line = davpush_proto::GrantKeys::generate_line();
    davpush_core::secrets::write_private(path, &format!("{line}\n")).map_err(|source| ConfigError::Secret {
        key: GRANT_KEY,
        path: path.into(),
        source,
    })?;
    generated.push((GRANT_KEY, path.to_owned()));
    davpush_proto::GrantKeys::parse(&line).map_err(|e| invalid(GRANT_KEY, format!("{}: {e}", path.display())))
}
