//! The OSCAR and s2s modes against the real `entente` binary, started by the tool itself.
//!
//! Ignored by default because they need the server built first:
//! `cargo build -p entente-server && cargo test -p entente-bench -- --ignored`
//! (`ENTENTE_BIN` overrides the path of the binary).

use std::path::PathBuf;

use clap::Parser;
use entente_bench::oscar::OscarArgs;
use entente_bench::s2s::S2sArgs;

#[derive(Parser)]
struct OscarCli {
    #[command(flatten)]
    args: OscarArgs,
}

#[derive(Parser)]
struct S2sCli {
    #[command(flatten)]
    args: S2sArgs,
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

fn argv(extra: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "entente-bench".to_string(),
        "--spawn".to_string(),
        server_binary(),
        // Generous bounds: the run ends when every sender has sent its messages.
        "--duration".to_string(),
        "600".to_string(),
        "--drain".to_string(),
        "60".to_string(),
        "--settle".to_string(),
        "0".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn oscar_ring_delivers_every_im_once_in_order() {
    let args = OscarCli::parse_from(argv(&[
        "--sessions",
        "5",
        "--pattern",
        "ring",
        "--messages",
        "6",
        "--window",
        "2",
        "--rate",
        "0",
    ]))
    .args;
    let report = entente_bench::oscar::execute(&args)
        .await
        .expect("benchmark run");
    assert_eq!(report.users_created + report.users_existing, 5);
    assert_eq!(report.sent, 30);
    assert_eq!(report.delivered, 30);
    assert_eq!(report.acked, 30);
    assert_eq!(report.failed, 0);
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.stale, 0);
    assert_eq!(report.disconnects, 0, "{:?}", report.first_disconnect);
    assert_eq!(report.latency.as_ref().map(|l| l.count), Some(30));
    assert_eq!(report.sign_on_latency.as_ref().map(|l| l.count), Some(5));
    assert!(report.sign_ons_per_s > 0.0);
    assert!(report.memory.is_some());
    assert_eq!(report.server_exit.as_deref(), Some("0 after SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn s2s_streams_deliver_every_message_to_hub_sessions() {
    let args = S2sCli::parse_from(argv(&[
        "--streams",
        "3",
        "--sessions",
        "4",
        "--messages",
        "40",
        "--window",
        "8",
    ]))
    .args;
    let report = entente_bench::s2s::execute(&args)
        .await
        .expect("benchmark run");
    assert_eq!(report.sent, 120);
    assert_eq!(report.delivered, 120);
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.refused, 0);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.stale, 0);
    assert_eq!(report.session_disconnects, 0);
    assert_eq!(report.stream_failures, 0, "{:?}", report.first_stream_end);
    assert_eq!(
        report.stream_setup_latency.as_ref().map(|l| l.count),
        Some(3)
    );
    // The server checked the tool's keys with the tool's listener.
    assert!(report.server_connections_to_tool >= 1);
    assert_eq!(report.latency.as_ref().map(|l| l.count), Some(120));
    assert_eq!(report.server_exit.as_deref(), Some("0 after SIGTERM"));
}
