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
    /// The grant keys, when subscriptions need grants (`subscription.grants = "required"`).
    pub grant_keys: Option<davpush_proto::GrantKeys>,
    /// The VAPID key pair, when Web Push is enabled.
    pub vapid_key: Option<Arc<VapidKey>>,
    /// Secret files generated now (printed once by the binary, by location).
    pub generated_secrets: Vec<(&'static str, PathBuf)>,
}

impl Config {
    /// Creates the data directory if needed, reads or generates the secrets and builds the
    /// WebDAV verifier. Secrets found from an earlier start are reused.
    pub fn prepare(&self) -> Result<Startup, ConfigError> {
        if self.needs_data_dir {
            std::fs::create_dir_all(&self.data_dir)
                .map_err(|e| invalid("server.data_dir", format!("cannot create {}: {e}", self.data_dir.display())))?;
        }
        let mut generated = Vec::new();
        let vapid_key = match &self.web_push {
            None => None,
            Some(w) => {
                let (key, created) = VapidKey::load_or_create(&w.vapid_key_file)
                    .map_err(|e| invalid("web_push.vapid_key_file", e.to_string()))?;
                if created {
                    generated.push(("web_push.vapid_key_file", w.vapid_key_file.clone()));
                }
                Some(Arc::new(key))
            }
        };
        let notify_tokens = tokens(&self.notify_tokens, &mut generated)?;
        let auth = &self.subscription_auth;
        let subscription_auth = match auth.mode {
            AuthMode::None => SubscriptionAuth::None,
            AuthMode::Token => SubscriptionAuth::Tokens(tokens(&auth.tokens, &mut generated)?),
            AuthMode::Webdav => {
                // Validation made sure of the URL.
                let url = auth.webdav_url.clone().ok_or_else(|| invalid("subscription.webdav_url", "is required"))?;
                // The tokens are for gateways that subscribe on behalf of users they authenticated.
                let tokens = tokens(&auth.tokens, &mut generated)?;
                let verifier = WebdavVerifier::new(
                    url,
                    auth.webdav_cache,
                    std::time::Duration::from_secs(self.request_timeout_secs),
                )
                .map_err(|e| invalid("subscription.webdav_url", e.to_string()))?;
                SubscriptionAuth::Webdav(Arc::new(verifier), tokens)
            }
        };
        // The key file exists in both modes, so a gateway sharing the data directory can start
        // (and sign) whatever the Director's setting.
        let keys = grant_keys(&self.grant_key_file, &mut generated)?;
        Ok(Startup {
            notify_tokens,
            subscription_auth,
            grant_keys: self.grants_required.then_some(keys),
            vapid_key,
            generated_secrets: generated,
        })
    }
}

/// The inline tokens and those in files; if there are none, the generated one.
fn tokens(source: &TokenSource, generated: &mut Vec<(&'static str, PathBuf)>) -> Result<Vec<Secret>, ConfigError> {
    let key = source.key;
    let mut out = source.inline.clone();
    for f in &source.files {
        let s = std::fs::read_to_string(f).map_err(|source| ConfigError::Secret { key, path: f.clone(), source })?;
        out.push(check_token(key, s.trim().to_owned())?);
    }
    if out.is_empty() {
        out.push(generated_token(key, &source.generated, generated)?);
    }
    Ok(out)
}

/// Reads the secret in `path`, or creates it (mode 0600) with a fresh random token.
fn generated_token(
    key: &'static str,
    path: &Path,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<Secret, ConfigError> {
    let fail = |source| ConfigError::Secret { key, path: path.into(), source };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Secret(s.trim().to_owned())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let token = davpush_core::ids::random_token(32);
    davpush_core::secrets::write_private(path, &format!("{token}\n")).map_err(fail)?;
    generated.push((key, path.to_owned()));
    Ok(Secret(token))
}

/// Reads the grant keys in `path`, or creates the file (mode 0600) with a fresh key.
fn grant_keys(
    path: &Path,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<davpush_proto::GrantKeys, ConfigError> {
    const KEY: &str = "subscription.grant_key_file";
    let text =
        match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let line = davpush_proto::GrantKeys::generate_line();
                davpush_core::secrets::write_private(path, &format!("{line}\n"))
                    .map_err(|source| ConfigError::Secret { key: KEY, path: path.into(), source })?;
                generated.push((KEY, path.to_owned()));
                line
            }
            Err(source) => return Err(ConfigError::Secret { key: KEY, path: path.into(), source }),
        };
    davpush_proto::GrantKeys::parse(&text).map_err(|e| invalid(KEY, format!("{}: {e}", path.display())))
}
