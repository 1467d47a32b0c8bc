//! SIMPLE bodies: PIDF, isComposing, message/cpim. Never panic; a PIDF that parses can be
//! rebuilt and reads back the same.
#![no_main]

use entente_sip::{cpim, iscomposing, pidf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Default::default();
    if let Ok(doc) = pidf::parse(data, &limits) {
        let kind = doc.presence_kind();
        let rebuilt = pidf::build(&doc.entity, &kind).expect("not a probe");
        let back = pidf::parse(&rebuilt, &limits).expect("our own PIDF must parse");
        assert_eq!(back.presence_kind(), kind);
    }
    let _ = iscomposing::parse(data, &limits);
    let _ = cpim::parse(data);
});
