//! Configuration tests: layering, validation naming the key, start-up making the secrets.

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn unknown_keys_are_named() {
    let e = RawConfig::from_toml("[server]\nlisten_addr = \"x\"\n", &env(&[]), &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("listen_addr"), "{e}");
    let e = RawConfig::from_toml("", &env(&[("DAVPUSH_WEBSOCKET__QUEUE", "5")]), &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("queue"), "{e}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let raw = RawConfig::from_toml(
        "[websocket]\nqueue_frames = 8\n[server]\nlisten = \"127.0.0.1:1\"\n",
        &env(&[("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "16"), ("DAVPUSH_SERVER__LISTEN", "127.0.0.1:2")]),
        &Overrides { listen: Some("127.0.0.1:3".into()), data_dir: None },
    )
    .unwrap();
    assert_eq!(raw.websocket.queue_frames, 16);
    assert_eq!(raw.server.listen, "127.0.0.1:3");
}

#[test]
fn davpushs_other_variables_are_not_keys_and_misspelt_keys_still_fail() {
    let others: Vec<(&str, &str)> =
        OTHER_VARIABLES.iter().map(|v| (*v, "x")).chain([("DAVPUSH_TEST_POSTGRES", "postgres://x")]).collect();
    assert!(RawConfig::from_toml("", &env(&others), &Overrides::default()).is_ok());
    for bad in ["DAVPUSH_SERVER_LISTEN", "DAVPUSH_SERVER__LISTN", "DAVPUSH_TOKENS"] {
        let e = RawConfig::from_toml("", &env(&[(bad, "127.0.0.1:2")]), &Overrides::default()).unwrap_err();
        let last = bad.rsplit("__").next().unwrap().trim_start_matches("DAVPUSH_").to_ascii_lowercase();
        assert!(e.to_string().contains(&last), "{bad}: {e}");
        assert!(e.to_string().contains(bad), "names the variable {bad}: {e}");
    }
}

#[test]
fn issue_12_errors_name_the_variable_or_flag_a_bad_value_came_from() {
    let none = Overrides::default();
    // A value of the wrong type, or an unknown section, names the variable.
    for (name, value) in [
        ("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "many"),
        ("DAVPUSH_SERVR__LISTEN", "127.0.0.1:1"),
        ("DAVPUSH_WEB_PUSH__URGENCY", "urgent"),
    ] {
        let e = RawConfig::from_toml("", &env(&[(name, value)]), &none).unwrap_err().to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
    // A value out of range, found by validation, too; a value from the file does not claim to be.
    let raw = RawConfig::from_toml("", &env(&[("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "0")]), &none).unwrap();
    let e = Config::from_raw(raw).unwrap_err().to_string();
    assert!(e.contains("websocket.queue_frames") && e.contains("DAVPUSH_WEBSOCKET__QUEUE_FRAMES"), "{e}");
    let raw = RawConfig::from_toml("[websocket]\nqueue_frames = 0\n", &env(&[]), &none).unwrap();
    let e = Config::from_raw(raw).unwrap_err().to_string();
    assert!(e.contains("websocket.queue_frames") && !e.contains("set by"), "{e}");
    let raw = RawConfig::from_toml(
        "[fcm]\nenabled = true\n",
        &env(&[("DAVPUSH_FCM__WORKERS", "0"), ("DAVPUSH_FCM__CREDENTIALS_FILE", "/nonexistent")]),
        &none,
    )
    .unwrap();
    let e = Config::from_raw(raw).unwrap_err().to_string();
    assert!(e.contains("DAVPUSH_FCM__"), "{e}");
    let flags = Overrides { listen: Some("nowhere".into()), data_dir: None };
    let e = Config::from_raw(RawConfig::from_toml("", &env(&[]), &flags).unwrap()).unwrap_err().to_string();
    assert!(e.contains("server.listen") && e.contains("--listen"), "{e}");
}

#[test]
fn validation_names_the_key_and_secrets_are_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    raw.server.data_dir = dir.path().to_owned();
    raw.subscription.min_expiry_secs = 10;
    let e = Config::from_raw(raw.clone()).unwrap_err();
    assert!(e.to_string().contains("subscription.min_expiry_secs"), "{e}");

    raw.subscription.min_expiry_secs = 3600;
    let config = Config::from_raw(raw.clone()).unwrap();
    let c = config.prepare().unwrap();
    // notify token, subscription token, VAPID key, grant key.
    assert_eq!(c.generated_secrets.len(), 4);
    assert!(c.grant_keys.is_some(), "grants are required by default");
    let grant_key = dir.path().join("grant-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&grant_key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let token_file = dir.path().join("notify-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let c2 = Config::from_raw(raw).unwrap().prepare().unwrap();
    assert!(c2.generated_secrets.is_empty(), "existing secrets are reused");
    assert_eq!(c.notify_tokens, c2.notify_tokens);
    assert!(!format!("{c:?}").contains(c.notify_tokens[0].expose()), "Debug never shows secrets");
}

#[test]
fn strict_privacy_refuses_public_push_services() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("[server]\nprivacy = \"strict\"\ndata_dir = {:?}\n", dir.path().display().to_string());
    let load = |extra: &str| {
        let raw = RawConfig::from_toml(&format!("{base}{extra}"), &env(&[]), &Overrides::default()).unwrap();
        Config::from_raw(raw)
    };
    let e = load("").unwrap_err();
    assert!(e.to_string().contains("web_push.enabled"), "default Web Push may reach public services: {e}");
    for (section, key) in [("fcm", "fcm.enabled"), ("apns", "apns.enabled"), ("hms", "hms.enabled")] {
        let e = load(&format!("[web_push]\nenabled = false\n[{section}]\nenabled = true\n")).unwrap_err();
        assert!(e.to_string().contains(key) && e.to_string().contains("strict"), "{e}");
    }
    let e = load("[web_push]\nenabled = false\n[fcm]\nenabled = true\nrelay_url = \"https://relay.example\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("fcm.enabled"), "a relay is public too: {e}");
    let c = load("[web_push]\nallow_hosts = [\"push.lan\"]\n").unwrap();
    assert!(c.strict_privacy);
    let policy = &c.web_push.as_ref().unwrap().policy;
    assert!(policy.check_addrs("https", "push.example.net", &["8.8.8.8:443".parse().unwrap()]).is_err());
    assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:443".parse().unwrap()]).is_ok());
    assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:8443".parse().unwrap()]).is_err());
    let c = load("[web_push]\nallow_hosts = [\"push.lan:8443\", \"[fd00::1]:8080\"]\n").unwrap();
    let policy = &c.web_push.as_ref().unwrap().policy;
    assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:8443".parse().unwrap()]).is_ok());
    let e = load("[web_push]\nallow_hosts = [\"push.lan:http\"]\n").unwrap_err();
    assert!(e.to_string().contains("web_push.allow_hosts"), "{e}");
    let e = RawConfig::from_toml("[server]\nprivacy = \"paranoid\"\n", &env(&[]), &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("server.privacy"), "{e}");
}

#[test]
fn mobile_services_name_the_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let t = format!("[server]\ndata_dir = {:?}\n{extra}", dir.path().display().to_string());
        // A value that is not one of a key's names is refused while parsing, the rest while validating.
        Config::from_raw(RawConfig::from_toml(&t, &env(&[]), &Overrides::default())?)
    };
    let c = load("").unwrap();
    assert!(c.fcm.is_none() && c.apns.is_none() && c.hms.is_none(), "off by default");
    for (extra, key) in [
        ("[fcm]\nenabled = true\n", "fcm.credentials_file"),
        ("[fcm]\nenabled = true\nmode = \"fanout\"\n", "fcm.mode"),
        ("[fcm]\nenabled = true\nrelay_url = \"https://r.example\"\n", "fcm.relay_key_file"),
        ("[fcm]\nenabled = true\ncredentials_file = \"/nonexistent.json\"\n", "fcm.credentials_file"),
        ("[apns]\nenabled = true\n", "apns.key_id"),
        ("[apns]\nenabled = true\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\n", "apns.bundle_id"),
        ("[apns]\nenabled = true\npriority = 10\n", "apns.priority"),
        ("[apns]\nenabled = true\nenvironment = \"dev\"\n", "apns.environment"),
        ("[hms]\nenabled = true\n", "hms.app_id"),
        ("[hms]\nenabled = true\napp_id = \"1234\"\n", "hms.client_secret_file"),
        ("[hms]\nenabled = true\napp_id = \"1234\"\nurgency = \"LOW\"\n", "hms.urgency"),
    ] {
        let e = load(extra).unwrap_err();
        assert!(e.to_string().contains(key), "{extra}: {e}");
    }
}

#[test]
fn the_example_and_the_deployment_profiles_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides { listen: None, data_dir: Some(dir.path().to_owned()) };
    let c = Config::from_raw(RawConfig::from_toml(EXAMPLE, &env(&[]), &flags).unwrap()).unwrap();
    assert!(c.fcm.is_none() && c.apns.is_none() && c.hms.is_none() && !c.strict_privacy);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    for name in ["profile-private", "profile-google-free", "profile-company", "profile-risk-exposed"] {
        let text = std::fs::read_to_string(format!("{root}{name}.toml")).unwrap();
        let mut raw = RawConfig::from_toml(&text, &env(&[]), &flags).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Secrets and credentials live on the real host; the rest must validate as is.
        raw.subscription.token_files.clear();
        raw.notify.token_files.clear();
        raw.fcm.enabled = false;
        raw.apns.enabled = false;
        let c = Config::from_raw(raw.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.strict_privacy, name == "profile-risk-exposed", "{name}");
        if c.strict_privacy {
            raw.fcm.enabled = true;
            let e = Config::from_raw(raw).unwrap_err().to_string();
            assert!(e.contains("fcm.enabled"), "{e}");
        }
    }
}

/// Issue 10: validation is pure; the data directory and secrets come at start-up.
#[test]
fn validation_creates_nothing_and_prepare_creates_the_data_dir_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut raw = RawConfig::default();
    raw.server.data_dir = data.clone();
    raw.subscription.auth = AuthMode::Webdav;
    raw.subscription.webdav_url = "http://127.0.0.1:1/dav/".into();
    let c = Config::from_raw(raw.clone()).unwrap();
    assert!(c.needs_data_dir);
    assert!(!data.exists(), "validation must not create the data directory");
    assert_eq!(c.web_push.as_ref().unwrap().vapid_key_file, data.join("vapid-key.pem"));
    let started = c.prepare().unwrap();
    assert!(data.is_dir());
    assert!(matches!(started.subscription_auth, SubscriptionAuth::Webdav(_, ref t) if t.len() == 1));
    let mut files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    // The database (empty until the store opens it) is the owner's only, like the secrets.
    assert_eq!(files, ["davpush.sqlite", "grant-key", "notify-token", "subscription-token", "vapid-key.pem"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("davpush.sqlite")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let keys: Vec<_> = started.generated_secrets.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["web_push.vapid_key_file", "notify.tokens", "subscription.tokens", "subscription.grant_key_file"]
    );

    // A token file is read at start-up: validation accepts a missing one, start-up names it.
    let other = dir.path().join("other");
    raw.server.data_dir = other.clone();
    raw.notify.token_files = vec![dir.path().join("missing-token")];
    let c = Config::from_raw(raw.clone()).unwrap();
    let e = c.prepare().unwrap_err().to_string();
    assert!(e.contains("notify.tokens") && e.contains("missing-token"), "{e}");
    std::fs::write(dir.path().join("missing-token"), "short\n").unwrap();
    let e = c.prepare().unwrap_err().to_string();
    assert!(e.contains("notify.tokens") && e.contains("at least 16"), "{e}");
    assert!(!e.contains("short"), "no token in an error: {e}");
    let e = Config::from_raw(RawConfig { store: RawStore { url: "ftp://x".into(), ..RawStore::default() }, ..raw })
        .unwrap_err();
    assert!(e.to_string().contains("store.url"), "{e}");
}

#[test]
fn named_values_parse_from_the_file_and_the_environment_and_dump_as_written() {
    let text = "[web_push]\nurgency = \"very-low\"\n[fcm]\nmode = \"topic\"\n[apns]\nenvironment = \"sandbox\"\n\
                push_type = \"alert\"\n[hms]\nurgency = \"NORMAL\"\n[server]\nprivacy = \"strict\"\n";
    let vars = env(&[("DAVPUSH_SUBSCRIPTION__AUTH", "none"), ("DAVPUSH_SUBSCRIPTION__GRANTS", "off")]);
    let raw = RawConfig::from_toml(text, &vars, &Overrides::default()).unwrap();
    assert_eq!(raw.web_push.urgency, davpush_delivery::webpush::Urgency::VeryLow);
    assert_eq!(raw.fcm.mode, davpush_delivery::fcm::FcmMode::Topic);
    assert_eq!(raw.apns.environment, davpush_delivery::apns::ApnsEnvironment::Sandbox);
    assert_eq!(raw.apns.push_type, davpush_delivery::apns::ApnsPushType::Alert);
    assert_eq!(raw.hms.urgency, davpush_delivery::hms::HmsUrgency::Normal);
    assert_eq!((raw.subscription.auth, raw.subscription.grants), (AuthMode::None, Grants::Off));
    assert_eq!(raw.server.privacy, Privacy::Strict);
    let dumped = raw.to_redacted_toml();
    for line in
        ["urgency = \"very-low\"", "mode = \"topic\"", "auth = \"none\"", "privacy = \"strict\"", "workers = 64"]
    {
        assert!(dumped.contains(line), "{line} in {dumped}");
    }
    let again = RawConfig::from_toml(&dumped, &env(&[]), &Overrides::default()).unwrap();
    assert_eq!(again.to_redacted_toml(), dumped, "the dump reads back as itself");
    let e = RawConfig::from_toml("[web_push]\nurgency = \"urgent\"\n", &env(&[]), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("web_push.urgency") && e.contains("very-low"), "{e}");
    let e =
        RawConfig::from_toml("[fcm]\nenabled = true\n", &env(&[("DAVPUSH_FCM__WORKERS", "0")]), &Overrides::default())
            .map(Config::from_raw)
            .unwrap()
            .unwrap_err()
            .to_string();
    assert!(e.contains("fcm.workers"), "{e}");
    let e = RawConfig::from_toml("[hms]\nworker = 3\n", &env(&[]), &Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("worker"), "{e}");
}

#[test]
fn short_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    raw.server.data_dir = dir.path().to_owned();
    raw.notify.tokens = vec!["short".into()];
    let e = Config::from_raw(raw).unwrap_err();
    assert!(e.to_string().contains("notify.tokens"), "{e}");
}

#[test]
fn issue_15_admin_tokens_are_checked_redacted_and_only_made_when_the_view_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    raw.server.data_dir = dir.path().to_owned();
    raw.admin.tokens = vec!["short".into()];
    assert!(Config::from_raw(raw.clone()).unwrap().admin_tokens.is_none(), "not checked while the view is off");
    raw.admin.enabled = true;
    let e = Config::from_raw(raw.clone()).unwrap_err();
    assert!(e.to_string().contains("admin.tokens"), "{e}");
    raw.admin.tokens = vec!["admin-token-of-the-operators".into()];
    let dumped = raw.to_redacted_toml();
    assert!(!dumped.contains("admin-token-of-the-operators") && dumped.contains("[admin]"), "{dumped}");
    raw.admin.tokens.clear();
    let config = Config::from_raw(raw).unwrap();
    let startup = config.prepare().unwrap();
    assert!(startup.generated_secrets.iter().any(|(k, p)| *k == "admin.tokens" && p.ends_with("admin-token")));
    assert_eq!(startup.admin_tokens.map(|t| t.len()), Some(1));
}

#[test]
fn issue_12_dump_config_redacts_the_user_information_of_the_relay_and_webdav_urls() {
    let text = "[fcm]\nrelay_url = \"https://vendor:s3cret-key@relay.example/v1\"\n\
                [subscription]\nwebdav_url = \"https://only-a-token@dav.example/\"\n";
    let dumped = RawConfig::from_toml(text, &env(&[]), &Overrides::default()).unwrap().to_redacted_toml();
    for secret in ["s3cret-key", "vendor", "only-a-token"] {
        assert!(!dumped.contains(secret), "{secret} in {dumped}");
    }
    assert!(dumped.contains("https://***@relay.example/v1"), "{dumped}");
    assert!(dumped.contains("https://***@dav.example/"), "{dumped}");
}

#[test]
fn issue_12_examples_davpush_toml_documents_every_key() {
    davpush_testkit::config::assert_example_documents_every_key(
        EXAMPLE,
        toml::Table::try_from(RawConfig::default()).unwrap(),
        "examples/davpush.toml",
    );
}
