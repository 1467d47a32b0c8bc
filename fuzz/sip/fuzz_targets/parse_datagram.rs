//! The datagram parser: never panics; whatever parses re-serialises to something that parses
//! to the same message.
#![no_main]

use entente_sip::{SipParser, SipxParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parser = SipxParser::default();
    if let Ok(msg) = parser.parse_datagram(data) {
        let again = parser
            .parse_datagram(&msg.to_bytes())
            .expect("our own serialisation must parse");
        assert_eq!(again, msg);
        let _ = entente_sip::headers::vias(&msg);
        let _ = entente_sip::headers::name_addr(&msg, "From");
        let _ = entente_sip::headers::cseq(&msg);
    }
});
