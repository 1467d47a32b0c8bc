//! `entente-bench`: command line of the load generator.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "entente-bench",
    version,
    about = "Load generator for the Entente hub (loopback only, bounded runs)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Hub client protocol over WebSocket: sessions exchange messages in pairs or a ring.
    Ws(entente_bench::ws::WsArgs),
    /// OSCAR clients sign on (BUCP, BOS) and send each other IMs in pairs or a ring.
    Oscar(entente_bench::oscar::OscarArgs),
    /// Plays a partner XMPP server: s2s streams (STARTTLS, dialback) carry messages to hub
    /// users connected over WebSocket.
    S2s(entente_bench::s2s::S2sArgs),
    /// Plays a SIP partner: user agents send MESSAGE to hub users (UDP or TCP), and the
    /// partner answers the hub users' messages.
    Sip(entente_bench::sip::SipArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Ws(args) => entente_bench::ws::run(args).await,
            Mode::Oscar(args) => entente_bench::oscar::run(args).await,
            Mode::S2s(args) => entente_bench::s2s::run(args).await,
            Mode::Sip(args) => entente_bench::sip::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
