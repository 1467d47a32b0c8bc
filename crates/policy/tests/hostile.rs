//! Arbitrary rules texts and bodies: errors or verdicts, never a panic.

use entente_policy::inspect::{contains_card_number, luhn};
use entente_policy::{Fingerprint, Inspector};
use proptest::prelude::*;

const BASE: &str = "reject executable\nreject lookalike paypal.com\nreject domain evil.example\n\
reject url x.example/a\ntag keyword secret\nreject regex r [0-9]{3}-x\nreject card\nreject eicar\n";

fn rule_line() -> impl Strategy<Value = String> {
    let action = prop::sample::select(vec!["allow", "tag", "quarantine", "reject", "set", "x"]);
    let kind = prop::sample::select(vec![
        "domain",
        "url",
        "executable",
        "lookalike",
        "keyword",
        "regex",
        "card",
        "eicar",
        "max_links",
        "inspect_hub",
        "",
    ]);
    (action, kind, ".{0,40}").prop_map(|(a, k, rest)| format!("{a} {k} {rest}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rules_texts_never_panic(lines in prop::collection::vec(rule_line(), 0..20)) {
        if let Ok(ins) = Inspector::from_rules(&lines.join("\n")) {
            let _ = ins.inspect_text("http://x.example/a.exe 4111 1111 1111 1111 paypa1.com");
        }
    }

    #[test]
    fn bodies_never_panic(body in ".{0,300}") {
        let ins = Inspector::from_rules(BASE).unwrap();
        let _ = ins.inspect_text(&body);
        let _ = Fingerprint::of_message(&body, 16);
    }

    #[test]
    fn link_like_bodies_never_panic(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "http://", "https://", "www.", ".", "/", ":", "@", "[", "]", "?", "#", "%2e", "xn--",
                "exe", "pif", "раураl", "paypa1", "com", "example", " ", "-", "1", "\u{202e}",
            ]),
            0..40,
        )
    ) {
        let ins = Inspector::from_rules(BASE).unwrap();
        let _ = ins.inspect_text(&parts.concat());
    }

    #[test]
    fn every_luhn_valid_number_is_found(mut digits in prop::collection::vec(0u8..10, 12..19), sep in prop::sample::select(vec!["", " ", "-"])) {
        // Complete the number with its check digit.
        let check = (0u8..10).find(|c| { let mut d = digits.clone(); d.push(*c); luhn(&d) }).unwrap();
        digits.push(check);
        let text: Vec<String> = digits.chunks(4).map(|c| c.iter().map(|d| d.to_string()).collect()).collect();
        let body = format!("number: {} thanks", text.join(sep));
        prop_assert!(contains_card_number(&body), "{}", body);
    }
}
