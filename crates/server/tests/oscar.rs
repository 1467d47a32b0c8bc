//! OSCAR end to end against the real binary: a scripted AIM-style client (BUCP login with the
//! strong MD5 hash, then the BOS sign-on libpurple performs) talks to browser-protocol users and
//! to another OSCAR user.

mod common;

use common::oscar::{buddy_items, sign_on, Oscar};

use common::{Client, Server, PATIENCE};
use entente_oscar::family::bucp::tlv;
use entente_oscar::family::feedbag;
use entente_oscar::family::{buddy, icbm};
use entente_oscar::{Channel, Snac, Tlv, TlvList};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OSCAR: &str = "oscar = \"127.0.0.1:0\"\n";
const PW: &str = "password1";

async fn web(server: &Server, user: &str) -> Client {
    let mut c = server.login(user).await;
    c.expect_type("roster").await;
    c
}

#[tokio::test]
async fn an_aim_user_and_a_browser_user_chat_and_see_each_other() {
    let s = Server::start_listening("", OSCAR);
    assert_eq!(s.register("Alice Smith", PW).await, 201);
    let mut alice = sign_on(&s, "Alice Smith", PW).await.unwrap();
    let mut bob = web(&s, "bob").await;

    // alice adds bob to her buddy list: bob is asked, approves, alice sees him arrive.
    alice.snac(&feedbag::StartCluster).await;
    alice
        .snac(&feedbag::InsertItems {
            items: buddy_items(&["bob"]),
        })
        .await;
    alice.snac(&feedbag::EndCluster).await;
    let status: feedbag::Status = alice.expect(0x13, 0x0E).await.body_as().unwrap();
    assert_eq!(status.codes, vec![0, 0]);
    bob.expect("request", |v| {
        v["type"] == "subscription_request" && v["from"] == "alicesmith@hub.test"
    })
    .await;
    bob.send(json!({"type": "approve", "to": "alicesmith@hub.test"}))
        .await;
    let reply: feedbag::AuthReplyToClient = alice.expect(0x13, 0x1B).await.body_as().unwrap();
    assert!(reply.0.accepted);
    assert_eq!(reply.0.screen_name, "bob");
    let arrived: buddy::Arrived = alice.expect(3, 0x0B).await.body_as().unwrap();
    assert_eq!(arrived.users[0].screen_name, "bob");

    // bob adds alice: her client is asked and accepts; bob sees her available.
    bob.send(json!({"type": "subscribe", "to": "alicesmith@hub.test"}))
        .await;
    let req: feedbag::AuthRequestToClient = alice.expect(0x13, 0x19).await.body_as().unwrap();
    assert_eq!(req.0.screen_name, "bob");
    alice
        .snac(&feedbag::AuthReplyToHost(feedbag::AuthReply {
            screen_name: "bob".into(),
            accepted: true,
            reason: String::new(),
        }))
        .await;
    bob.expect("subscribed", |v| {
        v["type"] == "subscribed" && v["from"] == "alicesmith@hub.test"
    })
    .await;
    bob.expect("alice available", |v| {
        v["type"] == "presence" && v["from"] == "alicesmith@hub.test" && v["show"] == "available"
    })
    .await;

    // IMs both ways: AIM HTML becomes text; text becomes escaped HTML.
    alice
        .im(
            "bob",
            "<HTML><BODY>Hello &amp; <B>welcome</B></BODY></HTML>",
        )
        .await;
    let m = bob.expect_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some("alicesmith@hub.test"), Some("Hello & welcome"))
    );
    assert_eq!(
        bob.message("w1", "alicesmith@hub.test", "1 < 2 & <script>x</script>")
            .await["type"],
        "ack"
    );
    let (from, text) = alice.incoming_im().await;
    assert_eq!(from, "bob");
    assert!(
        text.contains("1 &lt; 2 &amp; &lt;script&gt;x&lt;/script&gt;"),
        "{text}"
    );
    assert!(!text.contains("<script>"));

    // Typing both ways.
    alice
        .snac(&icbm::ClientEvent {
            cookie: [0; 8],
            channel: 1,
            screen_name: "bob".into(),
            event: icbm::typing::BEGUN,
        })
        .await;
    let t = bob.expect_type("typing").await;
    assert_eq!(
        (t["from"].as_str(), t["state"].as_str()),
        (Some("alicesmith@hub.test"), Some("composing"))
    );
    bob.send(json!({"type": "typing", "to": "alicesmith@hub.test", "state": "composing"}))
        .await;
    let ev: icbm::ClientEvent = alice.expect(4, 0x14).await.body_as().unwrap();
    assert_eq!(
        (ev.screen_name.as_str(), ev.event),
        ("bob", icbm::typing::BEGUN)
    );

    // An IM to nobody gets an ICBM error naming why.
    let rid = alice.im("nobody", "hello?").await;
    let err = alice.expect(4, 1).await;
    assert_eq!(err.header.request_id, rid);
    let code = entente_oscar::SnacError::decode_body(&err.body)
        .unwrap()
        .code;
    assert_eq!(
        code,
        entente_oscar::SnacErrorCode::RecipientNotLoggedIn as u16
    );

    // bob leaves: alice sees him depart.
    drop(bob);
    let gone: buddy::Departed = alice.expect(3, 0x0C).await.body_as().unwrap();
    assert_eq!(gone.users[0].screen_name, "bob");
}

#[tokio::test]
async fn logins_are_checked_and_offline_messages_wait() {
    let s = Server::start_listening("", OSCAR);
    assert_eq!(s.register("carol", PW).await, 201);
    assert_eq!(sign_on(&s, "carol", "wrong-password").await.err(), Some(5));
    assert_eq!(sign_on(&s, "nobody", PW).await.err(), Some(1));

    let mut dave = web(&s, "dave").await;
    assert_eq!(
        dave.message("o1", "carol@hub.test", "while you were out")
            .await["type"],
        "ack"
    );
    assert_eq!(
        dave.message("o2", "Carol@hub.test", "second").await["type"],
        "ack"
    );
    let mut carol = sign_on(&s, "Carol", PW).await.unwrap();
    assert_eq!(
        carol.incoming_im().await,
        ("dave".to_string(), "while you were out".to_string())
    );
    assert_eq!(carol.incoming_im().await.1, "second");
    // Delivered once: a second sign-on gets nothing again.
    drop(carol);
    let mut carol = sign_on(&s, "carol", PW).await.unwrap();
    assert!(carol
        .next(Duration::from_millis(500))
        .await
        .is_none_or(|f| {
            f.channel != Channel::Snac || Snac::decode(&f.payload).unwrap().kind() != (4, 7)
        }));
}

#[tokio::test]
async fn two_aim_users_message_each_other() {
    let s = Server::start_listening("", OSCAR);
    assert_eq!(s.register("erin", PW).await, 201);
    assert_eq!(s.register("frank", PW).await, 201);
    let mut erin = sign_on(&s, "erin", PW).await.unwrap();
    let mut frank = sign_on(&s, "frank", PW).await.unwrap();
    erin.im("Frank", "<HTML><BODY>hi frank</BODY></HTML>").await;
    assert_eq!(
        frank.incoming_im().await,
        ("erin".to_string(), "hi frank".to_string())
    );
    frank.im("erin", "hi erin").await;
    assert_eq!(erin.incoming_im().await.1, "hi erin");
}

#[tokio::test]
async fn hostile_oscar_input_is_cut_off_and_the_server_keeps_serving() {
    let s = Server::start_listening("", OSCAR);
    assert_eq!(s.register("gina", PW).await, 201);
    let addr = s.listeners["oscar"];

    // Not OSCAR at all.
    let mut c = Oscar::connect(addr).await;
    c.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(drain_until_closed(&mut c).await);
    // A FLAP whose length promises 60 KB.
    let mut c = Oscar::connect(addr).await;
    c.stream
        .write_all(&[0x2A, 0x01, 0, 1, 0xEA, 0x60, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(drain_until_closed(&mut c).await);
    // A made-up cookie on the BOS side.
    let mut c = Oscar::connect(addr).await;
    c.signon_frame(TlvList::new().with(Tlv::new(tlv::COOKIE, vec![9; 32])))
        .await;
    assert!(drain_until_closed(&mut c).await);
    // A truncated SNAC during login.
    let mut c = Oscar::connect(addr).await;
    c.flap(Channel::SignOn, vec![0, 0, 0, 1]).await;
    c.flap(Channel::Snac, vec![0, 0x17, 0]).await;
    assert!(drain_until_closed(&mut c).await);

    // Everyone else is still served.
    let mut gina = sign_on(&s, "gina", PW).await.unwrap();
    let mut web_user = web(&s, "hank").await;
    gina.im("hank", "still up").await;
    assert_eq!(web_user.expect_type("message").await["body"], "still up");
}

/// Reads until the server closes; false if it stays open past the patience window.
async fn drain_until_closed(c: &mut Oscar) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, c.stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// An AIM user blocks someone the AIM way (a deny item in the feedbag): the router enforces
/// it for every protocol, the hub client sees the same block list, and deleting the item
/// lifts the block.
#[tokio::test]
async fn a_deny_list_item_blocks_for_every_protocol() {
    let s = Server::start_listening("", OSCAR);
    assert_eq!(s.register("erin", PW).await, 201);
    let mut mallory = web(&s, "mallory").await;
    let mut erin = sign_on(&s, "erin", PW).await.unwrap();
    let deny = vec![entente_oscar::family::feedbag::FeedbagItem {
        name: "Mallory".into(),
        group_id: 0,
        item_id: 77,
        class: feedbag::class::DENY,
        attrs: TlvList::new(),
    }];
    erin.snac(&feedbag::InsertItems {
        items: deny.clone(),
    })
    .await;
    let status: feedbag::Status = erin.expect(0x13, 0x0E).await.body_as().unwrap();
    assert_eq!(status.codes, vec![0]);
    // The store took the change once the status came back; the router applies it in order.
    let mut refused = None;
    for i in 0..50 {
        let a = mallory
            .message(&format!("m{i}"), "erin@hub.test", "psst")
            .await;
        if a["type"] == "error" {
            refused = Some(a);
            break;
        }
        // Delivered before the block was in force: erin reads it.
        erin.incoming_im().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("the deny item took effect");
    assert_eq!(refused["code"], "recipient_unavailable", "{refused}");
    // erin cannot write to whom she blocked: an ICBM error.
    let rid = erin.im("mallory", "go away").await;
    let err = erin.expect(4, 1).await;
    assert_eq!(err.header.request_id, rid);
    // The hub client protocol shows the same list.
    let mut erin_web = web(&s, "erin").await;
    erin_web.send(json!({"type": "blocklist"})).await;
    assert_eq!(
        erin_web.expect_type("blocklist").await["items"],
        json!(["mallory@hub.test"])
    );
    // Deleting the deny item lifts the block.
    erin.snac(&feedbag::DeleteItems { items: deny }).await;
    let status: feedbag::Status = erin.expect(0x13, 0x0E).await.body_as().unwrap();
    assert_eq!(status.codes, vec![0]);
    erin_web
        .expect("the list emptied", |v| {
            v["type"] == "blocklist" && v["items"] == json!([])
        })
        .await;
    assert_eq!(
        mallory.message("again", "erin@hub.test", "hello").await["type"],
        "ack"
    );
    assert_eq!(erin.incoming_im().await.1, "hello");
}

/// An AIM user over the per-sender message rate gets OSCAR's own rate error for each IM over it.
#[tokio::test]
async fn an_aim_flood_gets_the_rate_error() {
    let s = Server::start_listening("[limits]\nsender_rate = 0.05\nsender_burst = 2\n", OSCAR);
    assert_eq!(s.register("hank", PW).await, 201);
    let mut ivy = web(&s, "ivy").await;
    let mut hank = sign_on(&s, "hank", PW).await.unwrap();
    hank.im("ivy", "one").await;
    hank.im("ivy", "two").await;
    let rid = hank.im("ivy", "three").await;
    let err = hank.expect(4, 1).await;
    assert_eq!(err.header.request_id, rid);
    let code = entente_oscar::SnacError::decode_body(&err.body)
        .unwrap()
        .code;
    assert_eq!(code, entente_oscar::SnacErrorCode::RateToHost as u16);
    for body in ["one", "two"] {
        ivy.expect(body, |v| v["type"] == "message" && v["body"] == body)
            .await;
    }
    assert!(ivy
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "message"));
}
