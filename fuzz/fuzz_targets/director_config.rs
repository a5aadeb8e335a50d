//! The Director's configuration text and environment layer (`RawConfig::from_toml`), and the
//! redacted dump (`--dump-config`) of what parses. The input is the TOML file, then optionally
//! a NUL byte and `DAVPUSH_*` variables, one `NAME=value` a line. (`Config::from_raw` is not
//! fuzzed here: it creates files named by the configuration.)
#![no_main]

use std::collections::BTreeMap;

use davpush_director::config::{Overrides, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, vars) = text.split_once('\0').unwrap_or((text, ""));
    let env: BTreeMap<String, String> =
        vars.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let Ok(raw) = RawConfig::from_toml(file, &env, &Overrides::default()) else { return };
    let dumped = raw.to_redacted_toml();
    if let Err(e) = RawConfig::from_toml(&dumped, &BTreeMap::new(), &Overrides::default()) {
        panic!("the redacted dump does not load again: {e}\n{dumped}");
    }
});
