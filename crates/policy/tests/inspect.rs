use entente_model::{Address, ErrorCode, Event, Message};
use entente_policy::inspect::{contains_card_number, extract_links, luhn, EICAR};
use entente_policy::{Boundary, Inspector, Verdict};

const RULES: &str = r"
# Entente content rules
set max_links 8
allow      domain      intranet.example.com
reject     domain      evil.example
reject     url         http://x.example/files/
reject     executable
quarantine lookalike   paypal.com
tag        keyword     confidential   # a comment after a rule
reject     keyword     wire the money
# a regex line's pattern is the rest of the line
quarantine regex       ssn \b\d{3}-\d{2}-\d{4}\b
reject     card
reject     eicar
";

fn inspector() -> Inspector {
    Inspector::from_rules(RULES).expect("example rules parse")
}

fn message(body: &str) -> Message {
    Message {
        id: "m1".into(),
        from: Address::parse("mallory@corp-a.example").unwrap(),
        to: Address::parse("bob@hub.example").unwrap(),
        body: body.into(),
        thread: None,
        ts: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn verdict(body: &str) -> Verdict {
    inspector().inspect(&message(body), Boundary::Federation)
}

#[test]
fn kelvir_style_executable_link_is_refused_and_names_the_rule() {
    let v = verdict("is it you? http://x.example/pic.pif");
    assert_eq!(v, Verdict::Reject("executable:.pif".into()));
    let refusal = v.refusal().expect("a reject is a refusal");
    assert_eq!(refusal.code, ErrorCode::PolicyViolation);
    assert!(refusal.text.contains("executable:.pif"), "{}", refusal.text);
}

#[test]
fn executable_extensions_are_found_however_written() {
    for body in [
        "get it: www.files.example/setup.EXE",
        "look http://a.example/x/y/photo.jpg.scr?size=2",
        "http://a.example/run.bat#top",
        "see https://a.example/doc%2eVBS",
        "http://a.example/app.jar",
        "http://a.example/setup.msi",
        "http://a.example/tool.cmd",
        "http://a.example/x.js",
        "http://a.example/get.php?id=3&file=setup.exe",
        "http://a.example/get?f=dir%2Fsetup%2Eexe#x",
    ] {
        assert!(
            matches!(verdict(body), Verdict::Reject(r) if r.starts_with("executable:")),
            "{body}"
        );
    }
    assert_eq!(verdict("http://a.example/photo.jpg"), Verdict::Allow);
    assert_eq!(verdict("a page http://a.example/exe/"), Verdict::Allow);
    assert_eq!(
        verdict("http://a.example/p?q=exe&r=x.png#a.exe"),
        Verdict::Allow
    );
    assert_eq!(verdict("no links here, just .exe talk"), Verdict::Allow);
}

#[test]
fn custom_executable_list_replaces_the_default() {
    let ins = Inspector::from_rules("quarantine executable .apk dmg").unwrap();
    assert_eq!(
        ins.inspect_text("http://a.example/game.apk"),
        Verdict::Quarantine("executable:.apk".into())
    );
    assert_eq!(ins.inspect_text("http://a.example/x.exe"), Verdict::Allow);
}

#[test]
fn blocked_domains_include_subdomains_and_urls_match_by_prefix() {
    assert_eq!(
        verdict("go to https://www.Evil.Example./login"),
        Verdict::Reject("domain:evil.example".into())
    );
    assert_eq!(verdict("notevil.example/x"), Verdict::Allow);
    assert_eq!(
        verdict("HTTPS://X.EXAMPLE/files/report.pdf"),
        Verdict::Reject("url:x.example/files/".into())
    );
    assert_eq!(verdict("http://x.example/other/report.pdf"), Verdict::Allow);
    assert_eq!(
        verdict("http://user:pw@evil.example:8080/"),
        Verdict::Reject("domain:evil.example".into())
    );
}

#[test]
fn allowed_domains_skip_link_rules_but_not_body_rules() {
    assert_eq!(
        verdict("build at http://intranet.example.com/setup.exe"),
        Verdict::Allow
    );
    assert_eq!(
        verdict("http://intranet.example.com/setup.exe confidential"),
        Verdict::Tag("keyword:confidential".into())
    );
}

#[test]
fn lookalikes_of_a_protected_domain() {
    for body in [
        "log in at paypa1.com now",
        "http://раураl.com/login",
        "https://xn--l-7sba6dbr.com/",
        "https://secure.paypa1.com/x",
        "http://paypal.com.evil-host.example/",
        "http://paypaI.com/",
        "PAYPA1.COM",
    ] {
        assert_eq!(
            verdict(body),
            Verdict::Quarantine("lookalike:paypal.com".into()),
            "{body}"
        );
    }
    assert_eq!(verdict("https://paypal.com/"), Verdict::Allow);
    assert_eq!(verdict("https://www.paypal.com/x"), Verdict::Allow);
    assert_eq!(verdict("https://paypals.com/"), Verdict::Allow);
}

#[test]
fn eicar_is_refused() {
    assert_eq!(
        verdict(&format!("test: {EICAR}")),
        Verdict::Reject("eicar".into())
    );
}

#[test]
fn card_numbers_need_the_luhn_check() {
    assert_eq!(
        verdict("my card is 4111 1111 1111 1111 exp 12/29"),
        Verdict::Reject("card".into())
    );
    assert_eq!(
        verdict("4111-1111-1111-1111"),
        Verdict::Reject("card".into())
    );
    assert_eq!(
        verdict("ref 5500005555555559."),
        Verdict::Reject("card".into())
    );
    // One digit changed: no longer passes Luhn.
    assert_eq!(verdict("my card is 4111 1111 1111 1112"), Verdict::Allow);
    assert_eq!(
        verdict("order 12 4111111111111111"),
        Verdict::Reject("card".into())
    );
    assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    assert!(!contains_card_number("call 555 1234 tomorrow"));
    assert!(!contains_card_number(&"1".repeat(100_000)));
}

#[test]
fn keywords_and_regexes() {
    assert_eq!(
        verdict("this is CONFIDENTIAL"),
        Verdict::Tag("keyword:confidential".into())
    );
    assert_eq!(
        verdict("please Wire The Money today"),
        Verdict::Reject("keyword:wire the money".into())
    );
    assert_eq!(
        verdict("ssn 123-45-6789"),
        Verdict::Quarantine("regex:ssn".into())
    );
    // The most severe action wins.
    assert_eq!(
        verdict("confidential: 4111 1111 1111 1111"),
        Verdict::Reject("card".into())
    );
    assert_eq!(verdict("hello"), Verdict::Allow);
    assert!(Verdict::Tag("x".into()).refusal().is_none());
}

#[test]
fn hub_messages_only_when_configured() {
    let body = "is it you? http://x.example/pic.pif";
    assert_eq!(
        inspector().inspect(&message(body), Boundary::Hub),
        Verdict::Allow
    );
    assert_eq!(
        inspector().inspect_event(&Event::Message(message(body)), Boundary::Federation),
        Verdict::Reject("executable:.pif".into())
    );
    let ins = Inspector::from_rules(&format!("set inspect_hub true\n{RULES}")).unwrap();
    assert!(ins.inspects_hub());
    assert_eq!(
        ins.inspect(&message(body), Boundary::Hub),
        Verdict::Reject("executable:.pif".into())
    );
}

#[test]
fn too_many_links_and_huge_bodies_are_bounded() {
    let many: String = (0..1_000).map(|i| format!("h{i}.example ")).collect();
    assert_eq!(verdict(&many), Verdict::Reject("link-count".into()));
    assert_eq!(extract_links(&many, 5).len(), 5);
    let huge = "a".repeat(70_000);
    assert_eq!(verdict(&huge), Verdict::Reject("body-size".into()));
    let ins =
        Inspector::from_rules("set max_body_bytes 10000000\nreject card\nreject eicar").unwrap();
    let big: String = "x1 http://a.example/ 4111 ".repeat(100_000);
    // Both the link count and the card rule fire; the count is ordered first.
    assert_eq!(ins.inspect_text(&big), Verdict::Reject("link-count".into()));
}

#[test]
fn rule_errors_are_clear() {
    let cases = [
        ("reject", "missing rule kind"),
        ("block domain x.example", "unknown action `block`"),
        ("reject thing x", "unknown rule kind `thing`"),
        ("reject domain", "needs one argument"),
        ("reject domain a.example b.example", "takes one argument"),
        ("allow keyword x", "`allow` applies only"),
        ("reject regex bad (unclosed", "regex `bad`"),
        ("reject regex onlyname", "needs a NAME and a PATTERN"),
        ("reject card 12", "takes no argument"),
        ("set max_links lots", "needs a number"),
        ("set max_links 999999", "at most"),
        ("set colour blue", "unknown setting"),
        ("set inspect_hub maybe", "true or false"),
        ("set body_size_action allow", "tag, quarantine or reject"),
        ("reject executable .", "empty"),
    ];
    for (text, want) in cases {
        let e = Inspector::from_rules(&format!("# header\n{text}\n")).unwrap_err();
        assert_eq!(e.line, 2, "{text}");
        assert!(e.to_string().contains(want), "{text}: {e}");
    }
}

#[test]
fn hostile_rules_files_are_refused_without_panics() {
    let e = Inspector::from_rules(&"#".repeat(2 << 20)).unwrap_err();
    assert!(e.message.contains("more than"), "{e}");
    let e = Inspector::from_rules(&format!("reject keyword {}", "k".repeat(10_000))).unwrap_err();
    assert!(e.message.contains("line longer"), "{e}");
    let many: String = (0..10_001)
        .map(|i| format!("reject keyword w{i}\n"))
        .collect();
    assert!(Inspector::from_rules(&many)
        .unwrap_err()
        .message
        .contains("rules"));
    let regexes: String = (0..300)
        .map(|i| format!("reject regex r{i} a{i}\n"))
        .collect();
    assert!(Inspector::from_rules(&regexes)
        .unwrap_err()
        .message
        .contains("regex rules"));
    // A regex whose compiled form is enormous.
    let e = Inspector::from_rules(r"reject regex big (\w{100}){100}").unwrap_err();
    assert!(e.message.contains("regex `big`"), "{e}");
    // Odd bytes and control characters never panic.
    for text in [
        "\u{0}\u{1}",
        "reject domain \u{202e}",
        "reject url ://",
        "reject lookalike ..",
        "set",
    ] {
        let _ = Inspector::from_rules(text);
    }
    // Ten thousand keyword rules still compile into one matcher.
    let ok: String = (0..9_000).map(|i| format!("tag keyword w{i}x\n")).collect();
    let ins = Inspector::from_rules(&ok).unwrap();
    assert_eq!(
        ins.inspect_text("a W8999X b"),
        Verdict::Tag("keyword:w8999x".into())
    );
}

/// What bounds the work of inspecting one body, whatever the rules file says.
#[test]
fn rules_that_would_make_inspection_slow_are_refused_or_folded() {
    // Links are compared with protected domains by windows of as many labels as they have.
    let e = Inspector::from_rules("reject lookalike a.b.c.d.e.f.g.h.example").unwrap_err();
    assert!(e.message.contains("more than 8 labels"), "{e}");
    let ins = Inspector::from_rules("reject lookalike a.b.c.d.e.f.g.example").unwrap();
    assert_eq!(
        ins.inspect_text("see http://a.b.c.d.e.f.g.examp1e/"),
        Verdict::Reject("lookalike:a.b.c.d.e.f.g.example".into())
    );
    // Regular expressions each within their own limit, too large together: the engine's time
    // grows with the size of the whole set.
    let one = "reject regex r0 [ab]*a[ab]{1000}0\n";
    assert!(Inspector::from_rules(one).is_ok());
    let many: String = (0..64)
        .map(|i| format!("reject regex r{i} [ab]*a[ab]{{1000}}{i}\n"))
        .collect();
    let e = Inspector::from_rules(&many).unwrap_err();
    assert!(e.message.contains("regex rules together"), "{e}");
    // Executable rules fold into one table of extensions: the verdict is the one every rule
    // tried in turn would give (most severe, then first in the file).
    let ins = Inspector::from_rules(
        "tag executable .exe .scr\nreject executable .scr\nquarantine executable\n\
         reject keyword invoice\nreject executable .zip\n",
    )
    .unwrap();
    for (body, want) in [
        (
            "http://a.example/x.exe",
            Verdict::Quarantine("executable:.exe".into()),
        ),
        (
            "http://a.example/x.scr",
            Verdict::Reject("executable:.scr".into()),
        ),
        (
            "http://a.example/x.pif",
            Verdict::Quarantine("executable:.pif".into()),
        ),
        (
            "http://a.example/x.zip invoice",
            Verdict::Reject("keyword:invoice".into()),
        ),
        (
            "http://a.example/x.scr invoice",
            Verdict::Reject("executable:.scr".into()),
        ),
    ] {
        assert_eq!(ins.inspect_text(body), want, "{body}");
    }
    // Thousands of executable rules listing hundreds of extensions each still compile, and a
    // link is looked up once per extension.
    let exts: String = (0..600).map(|i| format!(" .e{i}")).collect();
    let text: String = (0..200)
        .map(|i| format!("tag executable{exts}\nreject executable .x{i}\n"))
        .collect();
    let ins = Inspector::from_rules(&text).unwrap();
    assert_eq!(
        ins.inspect_text("http://a.example/f.e599 http://a.example/g.x199"),
        Verdict::Reject("executable:.x199".into())
    );
}

#[test]
fn hostile_bodies_never_panic() {
    let ins = inspector();
    for body in [
        "http://",
        "http://[::1",
        "http://[::1]:80/x.exe",
        "://///",
        "xn--.com",
        "http://xn--zzzzzzzzz.com/",
        "http://a..b..c/",
        "http://\u{202e}exe.example/",
        "www.",
        "https://%00/x.pif",
        "1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6",
    ] {
        let _ = ins.inspect_text(body);
    }
    assert_eq!(
        ins.inspect_text("http://127.0.0.1:80/x.exe"),
        Verdict::Reject("executable:.exe".into())
    );
}

#[test]
fn the_documented_example_parses_and_behaves_as_described() {
    let source = include_str!("../src/inspect.rs");
    let mut example = String::new();
    let mut inside = false;
    for line in source.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc.starts_with("```") {
            if inside {
                break;
            }
            inside = true;
            continue;
        }
        if inside {
            example.push_str(doc);
            example.push('\n');
        }
    }
    assert!(example.contains("lookalike"), "{example}");
    let ins = Inspector::from_rules(&example).expect("the documented example parses");
    assert!(ins.inspects_hub());
    assert_eq!(
        ins.inspect_text("http://x.example/pic.pif"),
        Verdict::Reject("executable:.pif".into())
    );
    assert_eq!(
        ins.inspect_text("http://x.example/files/a.txt"),
        Verdict::Reject("url:x.example/files/".into())
    );
    assert_eq!(
        ins.inspect_text("http://a.example/game.apk"),
        Verdict::Reject("executable:.apk".into()),
        "the default list (reject) comes before the custom one (quarantine)"
    );
    assert_eq!(
        ins.inspect_text("ssn 123-45-6789"),
        Verdict::Quarantine("regex:ssn".into())
    );
    assert_eq!(
        ins.inspect_text("top confidential"),
        Verdict::Tag("keyword:confidential".into())
    );
    assert_eq!(
        ins.inspect_text("http://intranet.example.com/setup.exe"),
        Verdict::Allow
    );
}
