use entente_policy::inspect::extract_links;
use entente_policy::{Fingerprint, Outbreak, OutbreakSettings};
use std::time::{Duration, Instant};

fn settings(n: usize, window_secs: u64) -> OutbreakSettings {
    OutbreakSettings {
        recipients: n,
        window: Duration::from_secs(window_secs),
        quarantine: Duration::from_secs(600),
        block: Duration::from_secs(3600),
        max_tracked: 1000,
        max_contained: 100,
    }
}

#[test]
fn twenty_recipients_of_one_link_trip_within_three_messages() {
    let mut ob = Outbreak::new(settings(3, 30));
    let t0 = Instant::now();
    let body = "is it you? http://x.example/pic.pif";
    let fps = Fingerprint::of_message(body, 8);
    assert_eq!(fps.len(), 2, "body and one link");
    let link = fps[1];
    let mut alerts = Vec::new();
    let mut delivered = 0;
    for i in 0..20 {
        let now = t0 + Duration::from_secs(i);
        if ob.is_quarantined("worm@corp-a.example", now) || ob.first_blocked(&fps, now).is_some() {
            continue;
        }
        delivered += 1;
        for fp in &fps {
            if let Some(alert) = ob.observe("worm@corp-a.example", &format!("u{i}@hub"), *fp, now) {
                alerts.push(alert);
            }
        }
    }
    assert_eq!(delivered, 3, "the third message trips the detector");
    // Body and link fingerprints both reached three recipients on the third message; the first
    // alert quarantined the sender, so only one alert is produced.
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.sender, "worm@corp-a.example");
    assert_eq!(alert.recipients, vec!["u0@hub", "u1@hub", "u2@hub"]);
    assert_eq!(alert.at, t0 + Duration::from_secs(2));
    assert_eq!(alert.quarantined_until, alert.at + Duration::from_secs(600));
    // Blocked for everyone, not only the sender.
    let later = t0 + Duration::from_secs(100);
    assert!(ob.is_blocked(&alert.fingerprint, later));
    assert!(ob.is_quarantined("worm@corp-a.example", later));
    assert!(!ob.is_quarantined("alice@hub", later));
    // The same link, written otherwise, from someone else is the same fingerprint.
    let other = extract_links("HTTP://X.EXAMPLE/pic.pif", 1);
    let fp_other = Fingerprint::of_link(&other[0]);
    assert_eq!(fp_other, link);
}

#[test]
fn repeats_to_one_recipient_and_slow_senders_do_not_trip() {
    let mut ob = Outbreak::new(settings(3, 10));
    let t0 = Instant::now();
    let fp = Fingerprint::of_body("hello");
    for i in 0..50 {
        let now = t0 + Duration::from_secs(i);
        assert!(ob.observe("a@hub", "b@hub", fp, now).is_none());
    }
    // Three recipients, but twenty seconds apart: never three within ten seconds.
    for i in 0..10 {
        let now = t0 + Duration::from_secs(100 + 20 * i);
        assert!(ob
            .observe("slow@hub", &format!("r{i}@hub"), fp, now)
            .is_none());
    }
    // Different fingerprints to different recipients: not an outbreak either.
    for i in 0..10 {
        let fp = Fingerprint::of_body(&format!("message {i}"));
        assert!(ob
            .observe("chatty@hub", &format!("r{i}@hub"), fp, t0)
            .is_none());
    }
}

#[test]
fn quarantine_and_block_expire_or_are_released() {
    let mut ob = Outbreak::new(settings(2, 10));
    let t0 = Instant::now();
    let fp = Fingerprint::of_body("free stuff");
    assert!(ob.observe("w@x", "a@hub", fp, t0).is_none());
    let alert = ob
        .observe("w@x", "b@hub", fp, t0)
        .expect("two recipients trip N=2");
    assert!(ob.is_quarantined("w@x", t0));
    assert_eq!(
        ob.quarantined(t0),
        vec![("w@x".to_string(), alert.quarantined_until)]
    );
    // While quarantined, no new alerts.
    assert!(ob.observe("w@x", "c@hub", fp, t0).is_none());
    assert!(ob.release("w@x"));
    assert!(!ob.release("w@x"));
    assert!(!ob.is_quarantined("w@x", t0));
    assert!(ob.is_blocked(&fp, t0));
    assert!(ob.unblock(&fp));
    assert!(!ob.is_blocked(&fp, t0));

    let t1 = t0 + Duration::from_secs(5);
    ob.observe("w@x", "a@hub", fp, t1);
    ob.observe("w@x", "b@hub", fp, t1)
        .expect("trips again after release");
    assert!(!ob.is_quarantined("w@x", t1 + Duration::from_secs(601)));
    assert!(ob.is_blocked(&fp, t1 + Duration::from_secs(601)));
    assert!(!ob.is_blocked(&fp, t1 + Duration::from_secs(3601)));
}

#[test]
fn fingerprints_normalise_bodies() {
    assert_eq!(
        Fingerprint::of_body("Is  it you?\n"),
        Fingerprint::of_body("is it YOU?")
    );
    assert_ne!(Fingerprint::of_body("a"), Fingerprint::of_body("b"));
    assert_eq!(Fingerprint::of_body("x").to_string().len(), 32);
    // A bare link and a body that is only that link are distinct kinds of fingerprint.
    let links = extract_links("x.example/a", 1);
    assert_ne!(
        Fingerprint::of_link(&links[0]),
        Fingerprint::of_body("x.example/a")
    );
}

#[test]
fn memory_stays_bounded_under_a_flood() {
    let mut ob = Outbreak::new(OutbreakSettings {
        recipients: 5,
        window: Duration::from_secs(3600),
        quarantine: Duration::from_secs(3600),
        block: Duration::from_secs(3600),
        max_tracked: 500,
        max_contained: 50,
    });
    let t0 = Instant::now();
    for i in 0..20_000u32 {
        let fp = Fingerprint::of_body(&i.to_string());
        ob.observe(&format!("s{}", i % 3000), "r@hub", fp, t0);
        assert!(ob.tracked() <= 500);
    }
    // Many tripping senders: the contained sets stay within their cap too.
    for s in 0..200 {
        let fp = Fingerprint::of_body(&format!("worm {s}"));
        let sender = format!("w{s}");
        let mut tripped = false;
        for r in 0..5 {
            tripped |= ob.observe(&sender, &format!("r{r}"), fp, t0).is_some();
        }
        assert!(tripped, "{sender}");
        assert!(ob.quarantined(t0).len() <= 50);
    }
    // The newest alert is always in force.
    assert!(ob.is_quarantined("w199", t0));
}

#[test]
fn shareable_across_router_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<entente_policy::Inspector>();
    send_sync::<std::sync::Mutex<Outbreak>>();
}
