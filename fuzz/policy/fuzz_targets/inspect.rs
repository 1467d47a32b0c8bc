//! A fixed rules set (every kind of rule, a low link limit) inspecting arbitrary message bodies:
//! never a panic; every verdict that is not `Allow` names a rule, and the refusal text the sender
//! sees names it too; a body over the size limit is refused as such without being inspected.
#![no_main]

use entente_policy::{Fingerprint, Inspector, Verdict};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const RULES: &str = r"
set max_links 8
set max_body_bytes 4096
allow      domain      intranet.example.com
reject     domain      evil.example
reject     url         http://x.example/files/
reject     executable
quarantine executable  .apk .dmg
reject     lookalike   paypal.com
quarantine lookalike   login.example-bank.co.uk
tag        keyword     confidential
reject     keyword     wire the money
quarantine regex       ssn \b\d{3}-\d{2}-\d{4}\b
reject     card
reject     eicar
";

fn inspector() -> &'static Inspector {
    static INSPECTOR: OnceLock<Inspector> = OnceLock::new();
    INSPECTOR.get_or_init(|| Inspector::from_rules(RULES).expect("the fuzz rules parse"))
}

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let verdict = inspector().inspect_text(&body);
    if body.len() > 4096 {
        assert_eq!(verdict, Verdict::Reject("body-size".into()));
        return;
    }
    match &verdict {
        Verdict::Allow => assert!(verdict.refusal().is_none()),
        Verdict::Tag(rule) => {
            assert!(!rule.is_empty());
            assert!(verdict.refusal().is_none());
        }
        Verdict::Quarantine(rule) | Verdict::Reject(rule) => {
            assert!(!rule.is_empty());
            assert!(verdict.refusal().unwrap().text.contains(rule.as_str()));
        }
    }
    let _ = Fingerprint::of_message(&body, 16);
    let _ = entente_policy::inspect::extract_links(&body, 9);
});
