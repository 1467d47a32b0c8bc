//! The SIP mode against the real `entente` binary, started by the tool itself.
//!
//! Ignored by default because it needs the server built first:
//! `cargo build -p entente-server && cargo test -p entente-bench -- --ignored`
//! (`ENTENTE_BIN` overrides the path of the binary).

use std::path::PathBuf;

use clap::Parser;
use entente_bench::sip::SipArgs;

#[derive(Parser)]
struct SipCli {
    #[command(flatten)]
    args: SipArgs,
}

fn server_binary() -> String {
    let path = std::env::var_os("ENTENTE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/entente")
        });
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo build -p entente-server` or set ENTENTE_BIN",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn args(extra: &[&str]) -> SipArgs {
    let mut argv = vec![
        "entente-bench".to_string(),
        "--spawn".to_string(),
        server_binary(),
        // Generous bounds: each direction ends when every sender has sent its messages.
        "--duration".to_string(),
        "600".to_string(),
        "--drain".to_string(),
        "60".to_string(),
        "--settle".to_string(),
        "0".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    SipCli::parse_from(argv).args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn sip_over_udp_both_ways_answers_and_delivers_every_message_once() {
    let args = args(&[
        "--senders",
        "3",
        "--sessions",
        "4",
        "--messages",
        "20",
        "--window",
        "4",
    ]);
    let report = entente_bench::sip::execute(&args)
        .await
        .expect("benchmark run");
    let inbound = report.inbound.as_ref().expect("the in direction ran");
    assert_eq!(inbound.sent, 60, "{inbound:?}");
    assert_eq!(inbound.answered_200, 60, "{inbound:?}");
    assert!(inbound.refused.is_empty(), "{inbound:?}");
    assert_eq!(inbound.unanswered, 0);
    assert_eq!(inbound.delivered, 60);
    assert_eq!(inbound.stale, 0);
    assert_eq!(inbound.sender_failures, 0);
    assert!(inbound.transaction_latency.is_some());
    assert!(inbound.delivery_latency.is_some());
    let outbound = report.outbound.as_ref().expect("the out direction ran");
    assert_eq!(outbound.sent, 80, "{outbound:?}");
    assert_eq!(outbound.arrived, 80, "{outbound:?}");
    assert_eq!(outbound.undelivered, 0);
    assert!(outbound.errors.is_empty(), "{outbound:?}");
    assert!(outbound.latency.is_some());
    assert_eq!(report.server_exit.as_deref(), Some("0 after SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn sip_over_tcp_inbound_answers_and_delivers_every_message_once() {
    let args = args(&[
        "--direction",
        "in",
        "--transport",
        "tcp",
        "--senders",
        "2",
        "--sessions",
        "3",
        "--messages",
        "25",
        "--window",
        "8",
    ]);
    let report = entente_bench::sip::execute(&args)
        .await
        .expect("benchmark run");
    assert!(report.outbound.is_none());
    let inbound = report.inbound.as_ref().expect("the in direction ran");
    assert_eq!(inbound.sent, 50, "{inbound:?}");
    assert_eq!(inbound.answered_200, 50, "{inbound:?}");
    assert_eq!(inbound.retransmissions, 0, "TCP is never retransmitted");
    assert_eq!(inbound.delivered, 50);
    assert_eq!(inbound.sender_failures, 0, "{inbound:?}");
}
