//! The TCP/TLS framer: the first byte picks chunk sizes, the rest is the stream. Never panics,
//! and the result does not depend on how the stream was cut.
#![no_main]

use entente_sip::{SipParser, SipxParser, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let parser = SipxParser::default();
    let mut whole = parser.framer();
    let all = whole.push(stream);
    let mut chunked = parser.framer();
    let step = usize::from(seed % 17) + 1;
    let mut got = Vec::new();
    let mut failed = false;
    for chunk in stream.chunks(step) {
        match chunked.push(chunk) {
            Ok(msgs) => got.extend(msgs),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if let Ok(msgs) = all {
        assert!(!failed);
        assert_eq!(msgs, got);
    }
});
