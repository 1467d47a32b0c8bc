//! A rules file of arbitrary text: `Inspector::from_rules` returns a compiled inspector or an
//! error naming a line, never panics, and whatever it accepts inspects a body that touches every
//! kind of rule.
#![no_main]

use entente_policy::inspect::{MAX_LINE_BYTES, MAX_RULES_BYTES};
use entente_policy::Inspector;
use libfuzzer_sys::fuzz_target;

/// Links of every shape the link rules look at, a card number and the EICAR string.
const BODY: &str = "is it you? http://x.example/pic.pif and www.paypa1.com/login, \
    https://xn--l-7sba6dbr.com/a?file=setup%2eexe http://[::1]:80/a.jar \
    4111 1111 1111 1111 confidential \
    X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Inspector::from_rules(text) {
        Ok(inspector) => {
            assert!(text.len() <= MAX_RULES_BYTES);
            let verdict = inspector.inspect_text(BODY);
            if let Some(refusal) = verdict.refusal() {
                assert!(refusal.text.contains(verdict.rule().unwrap_or("?")));
            }
            // The text the rules themselves are written in is a body like any other.
            let _ = inspector.inspect_text(text);
        }
        Err(e) => {
            assert!(e.line <= text.lines().count());
            if e.line > 0 {
                let line = text.lines().nth(e.line - 1).unwrap_or("");
                assert!(line.len() <= MAX_LINE_BYTES || e.message.contains("longer"));
            }
        }
    }
});
