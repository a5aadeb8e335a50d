//! A text frame a WebSocket client sends (`davpush_proto::ClientFrame`); what parses must
//! serialize and parse back to the same frame.
#![no_main]

use davpush_proto::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = serde_json::from_slice::<ClientFrame>(data) else { return };
    let text = serde_json::to_string(&frame).expect("a frame serializes");
    let again: ClientFrame = serde_json::from_str(&text).expect("a serialized frame parses");
    assert_eq!(again, frame);
});
