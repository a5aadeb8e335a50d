//! The gateway's XML tree (`davpush_gateway::xml`): what parses serializes to XML that parses
//! again, and serializing is then a fixed point.
#![no_main]

use davpush_gateway::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(root) = xml::parse(text) else { return };
    let once = xml::serialize(&root);
    let reparsed = match xml::parse(&once) {
        Ok(r) => r,
        Err(e) => panic!("serialized tree does not parse: {e}\n{once}"),
    };
    assert_eq!(xml::serialize(&reparsed), once, "serializing is a fixed point");
    let _ = xml::serialize_fragment(&root);
});
