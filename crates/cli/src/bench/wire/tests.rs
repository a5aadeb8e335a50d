use super::*;

/// An unmasked server frame.
fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    server_frame(0x80 | OP_TEXT, payload)
}

/// Feeds `bytes` to a reader in pieces of the given sizes (cycled) and collects the frames.
fn frames_fed_in(bytes: &[u8], capacity: usize, pieces: &[usize]) -> Result<Vec<(u8, Vec<u8>)>, WireError> {
    let mut r = Reader::new(capacity);
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    loop {
        while let Some(h) = r.head()? {
            out.push((h.opcode, r.take(h).to_vec()));
        }
        if at == bytes.len() {
            return Ok(out);
        }
        let spare = r.spare();
        assert!(!spare.is_empty(), "no room to read while no frame is complete");
        let n = pieces[k % pieces.len()].min(bytes.len() - at).min(spare.len()).max(1);
        k += 1;
        spare[..n].copy_from_slice(&bytes[at..at + n]);
        r.filled(n);
        at += n;
    }
}

#[test]
fn frames_split_at_every_byte_arrive_whole() {
    let a = text(br#"{"type":"notify","topic":"t","sync_token":"S1"}"#);
    let b = server_frame(0x80 | OP_PING, b"ping!");
    let c = text(&[b'x'; 300]); // 16-bit length
    let all: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
    let want = vec![(OP_TEXT, a[2..].to_vec()), (OP_PING, b"ping!".to_vec()), (OP_TEXT, vec![b'x'; 300])];
    for split in 0..=all.len() {
        // Two reads: the first `split` bytes, then the rest.
        let got = frames_fed_in(&all, 512, &[split.max(1), all.len()]).unwrap();
        assert_eq!(got, want, "split at {split}");
    }
    // One byte at a time, and odd piece sizes.
    for pieces in [&[1][..], &[3], &[7, 1, 13]] {
        assert_eq!(frames_fed_in(&all, 512, pieces).unwrap(), want, "{pieces:?}");
    }
}

#[test]
fn lengths_of_7_16_and_64_bits() {
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        let payload = vec![b'a'; len];
        let f = text(&payload);
        let header = match len {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        assert_eq!(f.len(), header + len);
        let h = parse(&f, 100_000).unwrap().unwrap();
        assert_eq!(h, Head { opcode: OP_TEXT, header, len }, "length {len}");
        // Incomplete by one byte: not yet.
        assert_eq!(parse(&f[..f.len() - 1], 100_000), Ok(None));
        let got = frames_fed_in(&f, 100_100, &[4096]).unwrap();
        assert_eq!(got, vec![(OP_TEXT, payload)]);
    }
}

#[test]
fn oversized_frames_are_refused_from_their_header() {
    let f = text(&[b'a'; 3000]);
    // Only the header has arrived: refused already.
    assert_eq!(parse(&f[..4], 2038), Err(WireError::Oversized(3000)));
    assert_eq!(frames_fed_in(&f, 2048, &[64]), Err(WireError::Oversized(3000)));
    // A 64-bit length beyond any buffer.
    let mut huge = vec![0x81, 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(parse(&huge, 2038), Err(WireError::Oversized(u64::MAX)));
    // The largest frame that fits the buffer is read.
    let fits = text(&[b'b'; 2038]);
    assert_eq!(frames_fed_in(&fits, 2048, &[100]).unwrap().len(), 1);
}

#[test]
fn ping_pong_close_and_binary() {
    for op in [OP_PING, OP_PONG, OP_CLOSE, OP_BINARY] {
        let f = server_frame(0x80 | op, b"\x03\xe8bye");
        assert_eq!(frames_fed_in(&f, 256, &[2]).unwrap(), vec![(op, b"\x03\xe8bye".to_vec())]);
    }
    // Control frames may not be longer than 125 bytes.
    let long_ping = server_frame(0x80 | OP_PING, &[0; 126]);
    assert_eq!(parse(&long_ping, 1000), Err(WireError::LongControl));
}

#[test]
fn fragments_masks_reserved_bits_and_unknown_opcodes_are_errors() {
    // A text frame without FIN, and a continuation frame.
    assert_eq!(parse(&server_frame(OP_TEXT, b"a"), 100), Err(WireError::Fragmented));
    assert_eq!(parse(&server_frame(0x80, b"a"), 100), Err(WireError::Fragmented));
    // A masked server frame.
    assert_eq!(parse(&[0x81, 0x81, 1, 2, 3, 4, b'a'], 100), Err(WireError::Masked));
    // RSV1 (compression, not negotiated).
    assert_eq!(parse(&server_frame(0xC1, b"a"), 100), Err(WireError::Reserved));
    for op in [3, 7, 0xB, 0xF] {
        assert_eq!(parse(&server_frame(0x80 | op, b""), 100), Err(WireError::Opcode(op)));
    }
}

#[test]
fn garbage_never_panics() {
    // Every 2- and 3-byte prefix, and pseudo-random buffers: parse returns, and what it
    // accepts lies inside the buffer.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = [0u8; 64];
    for round in 0..200_000u32 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if round < 65_536 {
            buf[0] = (round >> 8) as u8;
            buf[1] = round as u8;
        }
        let len = (x as usize >> 8) % buf.len();
        if let Ok(Some(h)) = parse(&buf[..len], 48) {
            assert!(h.total() <= len);
        }
    }
    // A reader fed garbage ends with an error or with frames, never a panic or a stuck buffer.
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = frames_fed_in(&garbage, 256, &[1, 17, 300]);
}

#[test]
fn masked_client_frames_unmask_to_their_payload() {
    let mut m = Masks::new(7);
    for len in [0, 5, 125, 126, 300, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut out = Vec::new();
        m.frame(OP_TEXT, &payload, &mut out);
        assert_eq!(out[0], 0x80 | OP_TEXT);
        assert!(out[1] & 0x80 != 0, "the mask bit is set");
        let (header, n) = match out[1] & 0x7F {
            126 => (4, usize::from(u16::from_be_bytes([out[2], out[3]]))),
            127 => (10, u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize),
            n => (2, usize::from(n)),
        };
        assert_eq!(n, len);
        let mask = &out[header..header + 4];
        let back: Vec<u8> = out[header + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(back, payload);
    }
}

#[test]
fn sync_tokens_are_found_by_byte_search() {
    assert_eq!(notify_token(br#"{"type":"notify","topic":"bench-1-0","sync_token":"S42"}"#), Some(&b"S42"[..]));
    assert_eq!(notify_token(br#"{"sync_token":"F3","type":"notify"}"#), Some(&b"F3"[..]));
    assert_eq!(notify_token(br#"{"type":"notify","topic":"t"}"#), Some(&b""[..]));
    assert_eq!(notify_token(br#"{"type":"notify","sync_token":"S4"#), Some(&b""[..]));
    assert_eq!(notify_token(br#"{"type":"subscribed","topic":"t"}"#), None);
    assert_eq!(notify_token(b""), None);
    assert_eq!(digits(b"0"), Some(0));
    assert_eq!(digits(b"1234567"), Some(1_234_567));
    assert_eq!(digits(b""), None);
    assert_eq!(digits(b"12a"), None);
    assert_eq!(digits(b"-1"), None);
    assert_eq!(digits(&[b'9'; 19]), None);
    assert_eq!(find(b"abcabd", b"abd"), Some(3));
    assert_eq!(find(b"ab", b"abc"), None);
}
