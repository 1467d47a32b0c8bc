//! Two endpoints over a virtual link with a virtual clock: retransmissions, timeouts,
//! retransmission absorption, subscriptions with refresh and expiry, in both roles.

mod support;

use std::time::Duration;

use entente_model::{
    ChatState, ErrorCode, Event, Failure, Message, Presence, PresenceKind, Show, Subscription,
    SubscriptionKind, Typing,
};
use entente_sip::Transport;
use support::{addr, Net, Side};
use time::OffsetDateTime;

fn message(id: &str, body: &str) -> Event {
    Event::Message(Message {
        id: id.into(),
        from: addr("bob@hub.test"),
        to: addr("carol@corp-b.test"),
        body: body.into(),
        thread: None,
        ts: OffsetDateTime::UNIX_EPOCH,
    })
}

fn messages(events: &[Event]) -> Vec<&Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn failures(events: &[Event]) -> Vec<&Failure> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failure(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn message_survives_lost_requests_over_udp() {
    let mut net = Net::new(Transport::Udp);
    let mut lost = 0;
    net.drop = Box::new(move |p| {
        if p.first_line().starts_with("MESSAGE") && lost < 2 {
            lost += 1;
            return true;
        }
        false
    });
    net.send(Side::A, message("m1", "hello carol"));
    net.advance(Duration::from_secs(40));
    let got = messages(&net.events_b);
    assert_eq!(got.len(), 1, "delivered exactly once");
    assert_eq!(got[0].body, "hello carol");
    assert_eq!(got[0].from, addr("bob@hub.test"));
    assert_eq!(got[0].to, addr("carol@corp-b.test"));
    // Sent at 0, 0.5 s (both lost), 1.5 s (arrives; answered after B's 1 s answer delay,
    // before timer E fires again at 3.5 s).
    let sent: Vec<Duration> = net.sent(Side::A, "MESSAGE").iter().map(|p| p.at).collect();
    assert_eq!(
        sent,
        vec![
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500)
        ]
    );
    let answers = net.sent(Side::B, "SIP/2.0 200");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].at, Duration::from_millis(2500));
    assert!(failures(&net.events_a).is_empty(), "{:?}", net.events_a);
}

#[test]
fn final_response_absorbs_request_retransmissions() {
    let mut b = support::config("127.0.0.2", "corp-b.test", Transport::Udp);
    b.message_answer_delay = Duration::ZERO;
    let a = support::config("127.0.0.1", "hub.test", Transport::Udp);
    let mut net = Net::with_configs(a, b, Transport::Udp);
    let mut lost = 0;
    // The first two 200 OKs are lost: B must replay its answer, never deliver twice.
    net.drop = Box::new(move |p| {
        if p.first_line().starts_with("SIP/2.0 200") && lost < 2 {
            lost += 1;
            return true;
        }
        false
    });
    net.send(Side::A, message("m2", "once"));
    net.advance(Duration::from_secs(60));
    assert_eq!(messages(&net.events_b).len(), 1);
    assert_eq!(net.sent(Side::A, "MESSAGE").len(), 3);
    assert_eq!(net.sent(Side::B, "SIP/2.0 200").len(), 3);
    let replies: Vec<&str> = net
        .sent(Side::B, "SIP/2.0 200")
        .iter()
        .map(|p| p.text.as_str())
        .collect();
    assert!(
        replies.windows(2).all(|w| w[0] == w[1]),
        "replayed byte for byte"
    );
    assert!(failures(&net.events_a).is_empty());
}

#[test]
fn udp_request_times_out_after_64_t1_with_retransmissions() {
    let mut net = Net::new(Transport::Udp);
    net.drop = Box::new(|p| p.from == Side::A);
    net.send(Side::A, message("m3", "into the void"));
    net.advance(Duration::from_secs(31));
    assert!(failures(&net.events_a).is_empty());
    net.advance(Duration::from_secs(2));
    let f = failures(&net.events_a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].code, ErrorCode::RemoteServerTimeout);
    assert_eq!(f[0].id, "m3");
    assert_eq!(f[0].to, addr("bob@hub.test"));
    assert_eq!(f[0].from, addr("carol@corp-b.test"));
    // 0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5 s.
    assert_eq!(net.sent(Side::A, "MESSAGE").len(), 11);
    // The driver hears of it, for the link's state.
    let u = net.a.poll_unanswered().expect("an unanswered request");
    assert_eq!(u.method, "MESSAGE");
    assert_eq!(u.to_domain.as_deref(), Some("corp-b.test"));
    assert_eq!(u.after, Duration::from_secs(32));
    assert!(
        matches!(u.destination, entente_sip::Destination::Resolve { ref host, .. } if host == "corp-b.test")
    );
    assert_eq!(net.a.poll_unanswered(), None);
    assert_eq!(net.b.poll_unanswered(), None);
}

#[test]
fn tcp_never_retransmits_and_still_times_out() {
    let mut net = Net::new(Transport::Tcp);
    net.drop = Box::new(|p| p.from == Side::A);
    net.send(Side::A, message("m4", "over tcp"));
    net.advance(Duration::from_secs(40));
    assert_eq!(net.sent(Side::A, "MESSAGE").len(), 1);
    assert!(net.sent(Side::A, "MESSAGE")[0].text.contains("SIP/2.0/TCP"));
    assert_eq!(
        failures(&net.events_a)[0].code,
        ErrorCode::RemoteServerTimeout
    );
}

#[test]
fn tcp_message_is_answered_once() {
    let mut net = Net::new(Transport::Tcp);
    net.send(Side::A, message("m5", "over tcp"));
    net.advance(Duration::from_secs(40));
    assert_eq!(messages(&net.events_b).len(), 1);
    assert_eq!(net.sent(Side::B, "SIP/2.0 200").len(), 1);
    assert!(failures(&net.events_a).is_empty());
}

#[test]
fn refusal_by_policy_travels_back_as_403_with_warning() {
    let mut net = Net::new(Transport::Udp);
    net.send(Side::A, message("m6", "buy now"));
    let id = messages(&net.events_b)[0].id.clone();
    net.send(
        Side::B,
        Event::Failure(Failure {
            from: addr("carol@corp-b.test"),
            to: addr("bob@hub.test"),
            id,
            code: ErrorCode::PolicyViolation,
            text: "rule \"no-spam\"\r\nX-Injected: yes".into(),
        }),
    );
    net.advance(Duration::from_secs(5));
    let answer = net.sent(Side::B, "SIP/2.0 403")[0].text.clone();
    assert!(
        answer.contains("Warning: 399 127.0.0.2 \"rule 'no-spam'  X-Injected: yes\""),
        "{answer}"
    );
    assert!(!answer.contains("\r\nX-Injected"));
    let f = failures(&net.events_a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].code, ErrorCode::PolicyViolation);
    assert_eq!(f[0].id, "m6");
    assert!(f[0].text.contains("no-spam"), "{}", f[0].text);
    // Nothing more is sent after the explicit answer.
    assert_eq!(net.sent(Side::B, "SIP/2.0 200").len(), 0);
}

#[test]
fn typing_notifications_cross() {
    let mut net = Net::new(Transport::Udp);
    net.send(
        Side::A,
        Event::Typing(Typing {
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            state: ChatState::Composing,
        }),
    );
    assert_eq!(
        net.events_b,
        vec![Event::Typing(Typing {
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            state: ChatState::Composing,
        })]
    );
    assert!(net.sent(Side::A, "MESSAGE")[0]
        .text
        .contains("Content-Type: application/im-iscomposing+xml"));
}

fn sub(from: &str, to: &str, kind: SubscriptionKind) -> Event {
    Event::Subscription(Subscription {
        from: addr(from),
        to: addr(to),
        kind,
    })
}

#[test]
fn presence_subscription_lifecycle_with_refresh_in_both_roles() {
    let mut net = Net::new(Transport::Udp);
    // A (subscriber for bob) → B (notifier for carol).
    net.send(
        Side::A,
        sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Subscribe,
        ),
    );
    assert_eq!(
        net.events_b,
        vec![sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Subscribe
        )]
    );
    assert!(
        net.events_a.is_empty(),
        "pending says nothing: {:?}",
        net.events_a
    );
    let notify = net.sent(Side::B, "NOTIFY")[0].text.clone();
    assert!(notify.contains("Subscription-State: pending"), "{notify}");

    // carol's side approves; then publishes a presence.
    net.send(
        Side::B,
        sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Subscribed,
        ),
    );
    assert_eq!(
        net.events_a,
        vec![sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Subscribed
        )]
    );
    net.events_a.clear();
    net.send(
        Side::B,
        Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: None,
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("lunch <back at 2>".into()),
            },
        }),
    );
    assert_eq!(
        net.events_a,
        vec![Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: Some(addr("bob@hub.test")),
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("lunch <back at 2>".into()),
            },
        })]
    );
    net.events_a.clear();
    // The same presence again is not a change: no NOTIFY.
    let notifies = net.sent(Side::B, "NOTIFY").len();
    net.send(
        Side::B,
        Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: None,
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("lunch <back at 2>".into()),
            },
        }),
    );
    assert_eq!(net.sent(Side::B, "NOTIFY").len(), notifies);
    assert!(net.events_a.is_empty());

    // Two refresh cycles of the 3600 s subscription: no subscription event on either side.
    net.advance(Duration::from_secs(7200));
    let refreshes = net.sent(Side::A, "SUBSCRIBE");
    assert!(
        refreshes.len() >= 3,
        "initial + refreshes: {}",
        refreshes.len()
    );
    assert!(refreshes[1].text.contains(";tag="), "refresh is in-dialog");
    assert!(
        net.events_a.iter().all(|e| matches!(e, Event::Presence(_))),
        "{:?}",
        net.events_a
    );
    assert_eq!(net.events_b.len(), 1, "{:?}", net.events_b);

    // bob unsubscribes: the dialog ends (terminated NOTIFY), which B does not take for a
    // removal of carol's approval (no event), and the final NOTIFY produces nothing at A.
    net.events_a.clear();
    let b_events = net.events_b.len();
    net.send(
        Side::A,
        sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Unsubscribe,
        ),
    );
    net.advance(Duration::from_secs(60));
    assert_eq!(net.events_b.len(), b_events, "{:?}", net.events_b);
    assert!(net
        .sent(Side::B, "NOTIFY")
        .last()
        .unwrap()
        .text
        .contains("terminated"));
    assert!(net.events_a.is_empty(), "{:?}", net.events_a);
    // Nothing left to time out on either side once transactions are done.
    net.advance(Duration::from_secs(3600));
    assert_eq!(net.a.poll_timeout(), None);
    assert_eq!(net.b.poll_timeout(), None);
}

/// Our subscription lapses when the partner stops answering: the contact is shown unavailable,
/// the subscription is not taken for withdrawn, and it comes back when the partner does.
#[test]
fn subscriptions_lapse_when_the_link_goes_down_and_come_back_with_it() {
    let mut net = Net::new(Transport::Udp);
    net.send(
        Side::A,
        sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Subscribe,
        ),
    );
    net.send(
        Side::B,
        sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Subscribed,
        ),
    );
    net.events_a.clear();
    net.events_b.clear();
    net.drop = Box::new(|_| true);
    net.advance(Duration::from_secs(3700));
    // A's refresh timed out: bob sees carol unavailable, once; nothing says she withdrew.
    assert_eq!(
        net.events_a,
        vec![Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: Some(addr("bob@hub.test")),
            kind: PresenceKind::Unavailable { status: None },
        })]
    );
    // B's subscription ran out without a refresh: the dialog is gone, carol's approval of bob
    // is not (no event).
    assert_eq!(net.events_b, vec![]);
    // Retries went out while the link was down, further and further apart.
    let tries = net.sent(Side::A, "SUBSCRIBE").len();
    net.advance(Duration::from_secs(3 * 3600));
    let more = net.sent(Side::A, "SUBSCRIBE").len() - tries;
    assert!((1..=60).contains(&more), "{more} retries in 3 h");
    assert!(net
        .events_a
        .iter()
        .all(|e| !matches!(e, Event::Subscription(_))));
    // The link is back: the next retry finds carol's approval still there, and her presence
    // reaches bob again.
    net.drop = Box::new(|_| false);
    net.send(
        Side::B,
        Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: Some(addr("bob@hub.test")),
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("back".into()),
            },
        }),
    );
    net.events_a.clear();
    net.advance(Duration::from_secs(2 * 3600));
    assert!(
        net.events_a.iter().any(|e| matches!(e,
            Event::Presence(Presence { from, kind: PresenceKind::Available { show: Show::Away, .. }, .. })
                if *from == addr("carol@corp-b.test"))),
        "{:?}",
        net.events_a
    );
    assert!(net
        .events_a
        .iter()
        .all(|e| !matches!(e, Event::Subscription(_))));
}

/// The last NOTIFY B sent.
fn last_notify(net: &Net) -> String {
    net.sent(Side::B, "NOTIFY").last().unwrap().text.clone()
}

#[test]
fn an_approved_watcher_that_subscribes_again_is_active_at_once() {
    let mut net = Net::new(Transport::Udp);
    let bob_subscribes = sub(
        "bob@hub.test",
        "carol@corp-b.test",
        SubscriptionKind::Subscribe,
    );
    net.send(Side::A, bob_subscribes.clone());
    assert!(last_notify(&net).contains("Subscription-State: pending"));
    // carol approves; later, while bob has no dialog, her presence changes.
    net.send(
        Side::B,
        sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Subscribed,
        ),
    );
    net.send(
        Side::A,
        sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Unsubscribe,
        ),
    );
    net.advance(Duration::from_secs(60));
    assert!(last_notify(&net).contains("Subscription-State: terminated"));
    net.send(
        Side::B,
        Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: Some(addr("bob@hub.test")),
            kind: PresenceKind::Available {
                show: Show::Dnd,
                status: Some("in a meeting".into()),
            },
        }),
    );
    // bob subscribes again: B reports the request (its router answers for an approved
    // contact), and the first NOTIFY is already active, with the presence meant for bob.
    net.events_a.clear();
    net.events_b.clear();
    let notifies = net.sent(Side::B, "NOTIFY").len();
    net.send(Side::A, bob_subscribes.clone());
    assert_eq!(net.events_b, vec![bob_subscribes.clone()]);
    let sent = net.sent(Side::B, "NOTIFY");
    assert_eq!(sent.len(), notifies + 1, "one NOTIFY, no pending one first");
    let first = &sent[notifies].text;
    assert!(first.contains("Subscription-State: active"), "{first}");
    assert!(first.contains("in a meeting"), "{first}");
    assert!(
        net.events_a.iter().any(|e| matches!(e,
            Event::Presence(Presence { from, kind: PresenceKind::Available { show: Show::Dnd, .. }, .. })
                if *from == addr("carol@corp-b.test"))),
        "{:?}",
        net.events_a
    );

    // carol withdraws her approval: the dialog is terminated as rejected, and a new SUBSCRIBE
    // waits for her again.
    net.send(
        Side::B,
        sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Unsubscribed,
        ),
    );
    assert!(last_notify(&net).contains("terminated;reason=rejected"));
    net.advance(Duration::from_secs(60));
    net.send(Side::A, bob_subscribes);
    assert!(
        last_notify(&net).contains("Subscription-State: pending"),
        "{}",
        last_notify(&net)
    );
}

#[test]
fn rejected_subscription_terminates_at_the_subscriber() {
    let mut net = Net::new(Transport::Tcp);
    net.send(
        Side::A,
        sub(
            "bob@hub.test",
            "carol@corp-b.test",
            SubscriptionKind::Subscribe,
        ),
    );
    net.send(
        Side::B,
        sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Unsubscribed,
        ),
    );
    assert_eq!(
        net.events_a,
        vec![sub(
            "carol@corp-b.test",
            "bob@hub.test",
            SubscriptionKind::Unsubscribed
        )]
    );
    let last = net.sent(Side::B, "NOTIFY").last().unwrap().text.clone();
    assert!(last.contains("terminated;reason=rejected"), "{last}");
}

#[test]
fn probe_is_a_one_off_fetch() {
    let mut net = Net::new(Transport::Udp);
    // B knows carol's presence before anyone asks.
    net.send(
        Side::B,
        Event::Presence(Presence {
            from: addr("carol@corp-b.test"),
            to: None,
            kind: PresenceKind::Available {
                show: Show::Dnd,
                status: None,
            },
        }),
    );
    net.send(
        Side::A,
        Event::Presence(Presence {
            from: addr("bob@hub.test"),
            to: Some(addr("carol@corp-b.test")),
            kind: PresenceKind::Probe,
        }),
    );
    net.advance(Duration::from_secs(60));
    let sub = net.sent(Side::A, "SUBSCRIBE")[0].text.clone();
    assert!(sub.contains("Expires: 0"), "{sub}");
    // A fetch creates no subscription at B, and A reports no subscription change.
    assert!(net.events_b.is_empty(), "{:?}", net.events_b);
    assert!(net
        .events_a
        .iter()
        .all(|e| !matches!(e, Event::Subscription(_))));
}

fn presence(from: &str, kind: PresenceKind) -> Event {
    Event::Presence(Presence {
        from: addr(from),
        to: None,
        kind,
    })
}

fn publish_net() -> Net {
    let mut a = support::config("127.0.0.1", "hub.test", Transport::Udp);
    a.publish_domains = vec!["corp-b.test".into()];
    let b = support::config("127.0.0.2", "corp-b.test", Transport::Udp);
    Net::with_configs(a, b, Transport::Udp)
}

#[test]
fn local_presence_is_published_refreshed_modified_and_removed() {
    let mut net = publish_net();
    let away = PresenceKind::Available {
        show: Show::Away,
        status: Some("back soon".into()),
    };
    net.send(Side::A, presence("bob@hub.test", away.clone()));
    assert_eq!(net.events_b, vec![presence("bob@hub.test", away)]);
    let first = net.sent(Side::A, "PUBLISH")[0].text.clone();
    assert!(!first.contains("SIP-If-Match"), "{first}");
    assert!(first.contains("application/pidf+xml"));

    // Refreshes keep B's state alive: conditional, bodiless, no new event.
    net.advance(Duration::from_secs(7200));
    let sent = net.sent(Side::A, "PUBLISH");
    assert!(sent.len() >= 3, "{}", sent.len());
    assert!(sent[1].text.contains("SIP-If-Match: "));
    assert!(sent[1].text.contains("Content-Length: 0"));
    assert_eq!(net.events_b.len(), 1, "{:?}", net.events_b);

    let dnd = PresenceKind::Available {
        show: Show::Dnd,
        status: None,
    };
    net.send(Side::A, presence("bob@hub.test", dnd.clone()));
    assert_eq!(net.events_b.last(), Some(&presence("bob@hub.test", dnd)));
    let modify = net.sent(Side::A, "PUBLISH").last().unwrap().text.clone();
    assert!(modify.contains("SIP-If-Match: ") && modify.contains("<rpid:busy/>"));

    let gone = PresenceKind::Unavailable { status: None };
    net.send(Side::A, presence("bob@hub.test", gone.clone()));
    assert_eq!(net.events_b.last(), Some(&presence("bob@hub.test", gone)));
    let remove = net.sent(Side::A, "PUBLISH").last().unwrap().text.clone();
    assert!(remove.contains("Expires: 0"), "{remove}");
    let count = net.sent(Side::A, "PUBLISH").len();
    net.advance(Duration::from_secs(7200));
    assert_eq!(
        net.sent(Side::A, "PUBLISH").len(),
        count,
        "nothing left to refresh"
    );
    assert_eq!(net.a.poll_timeout(), None);
}

#[test]
fn a_forgotten_entity_tag_is_published_afresh() {
    let mut net = publish_net();
    let away = PresenceKind::Available {
        show: Show::Away,
        status: None,
    };
    net.send(Side::A, presence("bob@hub.test", away.clone()));
    // B restarts and forgets every publication.
    net.b = entente_sip::Endpoint::new(
        support::config("127.0.0.2", "corp-b.test", Transport::Udp),
        net.now,
        OffsetDateTime::UNIX_EPOCH,
    );
    net.events_b.clear();
    net.advance(Duration::from_secs(3000));
    assert_eq!(net.sent(Side::B, "SIP/2.0 412").len(), 1);
    // The refresh failed with 412; the full state went out again and B has it.
    assert_eq!(net.events_b, vec![presence("bob@hub.test", away)]);
}

#[test]
fn a_transport_error_fails_the_message_at_once() {
    let mut net = Net::new(Transport::Tcp);
    let now = net.now;
    net.a.send(message("m7", "nobody home"), now).unwrap();
    let t = net.a.poll_transmit().unwrap();
    net.a.handle_transport_error(&t, now);
    let e = net.a.poll_event().unwrap();
    let Event::Failure(f) = e else {
        panic!("{e:?}")
    };
    assert_eq!(f.code, ErrorCode::RemoteServerNotFound);
    assert_eq!(f.id, "m7");
    assert_eq!(net.a.poll_timeout(), None);
}

mod lossy {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

        /// Whatever the link loses, a MESSAGE is delivered at most once, the sender hears at
        /// most one outcome, and hears a failure whenever the message did not get through.
        #[test]
        fn at_most_once_and_never_silent(losses in proptest::collection::vec(any::<bool>(), 0..40)) {
            let mut net = Net::new(Transport::Udp);
            let mut i = 0;
            net.drop = Box::new(move |_| {
                let lost = losses.get(i).copied().unwrap_or(false);
                i += 1;
                lost
            });
            net.send(Side::A, message("p1", "maybe"));
            net.advance(Duration::from_secs(120));
            let delivered = messages(&net.events_b).len();
            let failed = failures(&net.events_a).len();
            prop_assert!(delivered <= 1);
            prop_assert!(failed <= 1);
            if delivered == 0 {
                prop_assert_eq!(failed, 1);
            }
            if failed == 1 {
                prop_assert_eq!(failures(&net.events_a)[0].code, ErrorCode::RemoteServerTimeout);
            }
            // Everything has settled: no timer left on either side.
            prop_assert_eq!(net.a.poll_timeout(), None);
            prop_assert_eq!(net.b.poll_timeout(), None);
        }
    }
}

mod lossy_subscriptions {
    use super::*;
    use proptest::prelude::*;

    /// Runs `secs` seconds of virtual time, second by second, with carol's side approving
    /// every watcher as soon as it asks (as a router with a permissive roster would).
    fn run_approving(net: &mut Net, secs: u64) {
        let mut seen = 0;
        for _ in 0..secs {
            net.advance(Duration::from_secs(1));
            while seen < net.events_b.len() {
                let e = net.events_b[seen].clone();
                seen += 1;
                if e == sub(
                    "bob@hub.test",
                    "carol@corp-b.test",
                    SubscriptionKind::Subscribe,
                ) {
                    net.send(
                        Side::B,
                        sub(
                            "carol@corp-b.test",
                            "bob@hub.test",
                            SubscriptionKind::Subscribed,
                        ),
                    );
                }
            }
        }
    }

    fn last_subscription_event(events: &[Event]) -> Option<SubscriptionKind> {
        events.iter().rev().find_map(|e| match e {
            Event::Subscription(s) => Some(s.kind),
            _ => None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// Losses early in a subscription's life never leave the two sides disagreeing once
        /// the link is healthy again: bob is told he watches carol exactly when carol's side
        /// holds an active subscription dialog for bob (a dialog that ended is not reported to
        /// carol's router: it is not a change of her approval).
        #[test]
        fn both_sides_agree_after_early_losses(losses in proptest::collection::vec(any::<bool>(), 0..30)) {
            let mut net = Net::new(Transport::Udp);
            let mut i = 0;
            net.drop = Box::new(move |_| {
                let lost = losses.get(i).copied().unwrap_or(false);
                i += 1;
                lost
            });
            net.send(Side::A, sub("bob@hub.test", "carol@corp-b.test", SubscriptionKind::Subscribe));
            run_approving(&mut net, 8000);
            let a_view = last_subscription_event(&net.events_a);
            let a_watching = a_view == Some(SubscriptionKind::Subscribed);
            let b_holds = net.b.is_watched_by(&addr("carol@corp-b.test"), &addr("bob@hub.test"));
            prop_assert_eq!(
                a_watching, b_holds,
                "A: {:?}\nB: {:?}", net.events_a, net.events_b
            );
        }
    }
}

fn typing(state: ChatState) -> Event {
    Event::Typing(Typing {
        from: addr("bob@hub.test"),
        to: addr("carol@corp-b.test"),
        state,
    })
}

#[test]
fn composing_is_refreshed_while_it_lasts_and_ends_with_a_message() {
    let mut net = Net::new(Transport::Udp);
    net.send(Side::A, typing(ChatState::Composing));
    net.advance(Duration::from_secs(200));
    let indications = |net: &Net| {
        net.sent(Side::A, "MESSAGE")
            .iter()
            .filter(|p| p.text.contains("im-iscomposing"))
            .count()
    };
    // Refreshed every 50 s, shown once at B: still composing.
    assert_eq!(indications(&net), 5);
    assert_eq!(net.events_b, vec![typing(ChatState::Composing)]);
    // A text message ends it at both ends: no more refreshes, no lapse event.
    net.send(Side::A, message("m8", "done typing"));
    net.advance(Duration::from_secs(400));
    assert_eq!(indications(&net), 5);
    assert_eq!(net.events_b.len(), 2, "{:?}", net.events_b);
    assert!(matches!(net.events_b[1], Event::Message(_)));

    // Without news, refreshing stops after 300 s and the peer lets it lapse.
    net.events_b.clear();
    net.send(Side::A, typing(ChatState::Composing));
    net.advance(Duration::from_secs(600));
    assert_eq!(
        net.events_b,
        vec![typing(ChatState::Composing), typing(ChatState::Paused)]
    );
    assert_eq!(net.a.poll_timeout(), None);
}

#[test]
fn many_transactions_each_keep_their_timers_and_all_settle() {
    let mut b = support::config("127.0.0.2", "corp-b.test", Transport::Udp);
    b.message_answer_delay = Duration::ZERO;
    let a = support::config("127.0.0.1", "hub.test", Transport::Udp);
    let mut net = Net::with_configs(a, b, Transport::Udp);
    // Every 20th MESSAGE is lost once: its retransmission (timer E) must still fire among
    // hundreds of other transactions' timers.
    let mut seen = 0u32;
    net.drop = Box::new(move |p| {
        if p.first_line().starts_with("MESSAGE") {
            seen += 1;
            return seen % 20 == 1 && seen <= 400;
        }
        false
    });
    for i in 0..400 {
        net.send(Side::A, message(&format!("n{i}"), "one of many"));
        net.advance(Duration::from_millis(10));
    }
    net.advance(Duration::from_secs(40));
    assert_eq!(messages(&net.events_b).len(), 400);
    assert!(failures(&net.events_a).is_empty(), "{:?}", net.events_a);
    // 400 requests, 20 of them lost once and sent again.
    assert_eq!(net.sent(Side::A, "MESSAGE").len(), 420);
    // Timers K (client) and J (server) have run out: nothing is left on either side.
    net.advance(Duration::from_secs(40));
    assert_eq!(net.a.poll_timeout(), None);
    assert_eq!(net.b.poll_timeout(), None);
}
