//! The WebSocket mode against the real `entente` binary, started by the tool itself.
//!
//! Ignored by default because it needs the server built first:
//! `cargo build -p entente-server && cargo test -p entente-bench -- --ignored`
//! (`ENTENTE_BIN` overrides the path of the binary).

use std::path::PathBuf;

use clap::Parser;
use entente_bench::ws::{execute, WsArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    ws: WsArgs,
}

fn server_binary() -> PathBuf {
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
    path
}

fn args(extra: &[&str]) -> WsArgs {
    let binary = server_binary();
    let mut argv = vec![
        "entente-bench".to_string(),
        "--spawn".to_string(),
        binary.to_string_lossy().into_owned(),
        // Generous bounds: the run ends when every session has sent its messages.
        "--duration".to_string(),
        "600".to_string(),
        "--drain".to_string(),
        "60".to_string(),
        "--settle".to_string(),
        "0".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(argv).ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn pairs_deliver_every_message_once() {
    let args = args(&["--sessions", "4", "--messages", "25", "--window", "4"]);
    let report = execute(&args).await.expect("benchmark run");
    assert_eq!(report.users_created + report.users_existing, 4);
    assert_eq!(report.sent, 100);
    assert_eq!(report.acked, 100);
    assert_eq!(report.delivered, 100);
    assert_eq!(report.failed, 0);
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.disconnects, 0, "{:?}", report.first_disconnect);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.latency.as_ref().map(|l| l.count), Some(100));
    assert_eq!(report.ack_latency.as_ref().map(|l| l.count), Some(100));
    let memory = report
        .memory
        .as_ref()
        .expect("memory of the spawned server");
    assert!(memory.peak_kib >= memory.connected_kib);
    assert_eq!(report.server_exit.as_deref(), Some("0 after SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the entente binary: cargo build -p entente-server"]
async fn ring_with_an_odd_count_and_paced_sending() {
    let args = args(&[
        "--sessions",
        "3",
        "--pattern",
        "ring",
        "--messages",
        "10",
        "--rate",
        "50",
        "--body-size",
        "300",
    ]);
    let report = execute(&args).await.expect("benchmark run");
    assert_eq!(report.sent, 30);
    assert_eq!(report.delivered, 30);
    assert_eq!(report.acked, 30);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.body_bytes, 300);
    assert_eq!(report.disconnects, 0, "{:?}", report.first_disconnect);
    assert_eq!(report.server_exit.as_deref(), Some("0 after SIGTERM"));
}
