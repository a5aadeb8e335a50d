//! A `push-register` POST body (WebDAV-Push registration XML): `is_push_register`, then
//! `parse_push_register`.
#![no_main]

use davpush_gateway::dav::{is_push_register, parse_push_register};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(root) = is_push_register(data) else { return };
    if let Ok(r) = parse_push_register(&root) {
        assert!(!r.push_resource.is_empty());
    }
});
