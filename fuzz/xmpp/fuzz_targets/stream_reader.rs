//! The stream reader on arbitrary bytes, cut into arbitrary chunks: it must never panic, never
//! read past its limits, and stay failed once it failed.
#![no_main]

use entente_xmpp::{Limits, ReadEvent, StreamReader};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    to='hub.test' from='corp-a.test' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    // Half of the inputs get a valid header so the fuzzer reaches stanza parsing quickly.
    let input: Vec<u8> = if chunk % 2 == 0 {
        HEADER.iter().chain(rest).copied().collect()
    } else {
        rest.to_vec()
    };
    let limits = Limits {
        max_stanza_bytes: 4096,
        ..Limits::default()
    };
    let mut reader = StreamReader::new(limits);
    let mut failed = false;
    let mut ended = false;
    for piece in input.chunks(chunk) {
        let mut piece = piece;
        loop {
            match reader.read(&mut piece) {
                Ok(Some(ReadEvent::End)) => ended = true,
                Ok(Some(_)) => assert!(!ended, "items after the end of the stream"),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let mut more: &[u8] = b"<a/>";
            assert!(reader.read(&mut more).is_err(), "errors must be sticky");
            break;
        }
    }
});
