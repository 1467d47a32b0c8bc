//! `entente`: run the hub, manage accounts, check configuration.

use clap::{Parser, Subcommand};
use entente_server::config::Config;
use entente_server::{accounts, anyhow_lite};
use entente_store::StoreError;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "entente",
    version,
    about = "A federated instant-messaging hub and gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Configuration file (TOML). Without one, the embedded default is used.
    #[arg(long, env = "ENTENTE_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub and the gateway until SIGINT/SIGTERM.
    Serve(ConfigArg),
    /// Manage hub accounts.
    User {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account (the password is read from stdin when not given).
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// List accounts.
    List,
    /// Remove an account with its contacts and queued messages.
    Remove { name: String },
    /// Set an account's password (read from stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a configuration and print the effective one.
    Check(ConfigArg),
    /// Print a fully commented example configuration.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENTENTE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("entente: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entente: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> anyhow_lite::Result<Config> {
    Config::load(arg.config.as_deref()).map_err(|e| anyhow_lite::msg(e.to_string()))
}

fn read_password(given: Option<String>) -> anyhow_lite::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow_lite::msg(format!("reading the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn run(cli: Cli) -> anyhow_lite::Result<()> {
    match cli.command {
        Command::Serve(arg) => {
            let config = load(&arg)?;
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                stop.cancel();
            });
            entente_server::serve(config, shutdown).await
        }
        Command::Config {
            action: ConfigAction::Example,
        } => {
            print!("{}", entente_server::config::EXAMPLE);
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check(arg),
        } => {
            let config = load(&arg)?;
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::User { config, action } => {
            let config = load(&config)?;
            let store = entente_server::open_store(&config).await?;
            let fail = |e: StoreError| anyhow_lite::msg(e.to_string());
            match action {
                UserAction::Add { name, password } => {
                    let name = accounts::validate_name(&name).map_err(anyhow_lite::msg)?;
                    let password = read_password(password)?;
                    accounts::validate_password(&password).map_err(anyhow_lite::msg)?;
                    store.create_account(&name, &password).await.map_err(fail)?;
                    println!("created {name}@{}", config.hub.domain);
                }
                UserAction::List => {
                    for name in store.list_accounts().await.map_err(fail)? {
                        println!("{name}@{}", config.hub.domain);
                    }
                }
                UserAction::Remove { name } => {
                    let name = accounts::validate_name(&name).map_err(anyhow_lite::msg)?;
                    store
                        .remove_account(&name, &config.hub.domain)
                        .await
                        .map_err(fail)?;
                    println!("removed {name}@{}", config.hub.domain);
                }
                UserAction::Passwd { name, password } => {
                    let name = accounts::validate_name(&name).map_err(anyhow_lite::msg)?;
                    let password = read_password(password)?;
                    accounts::validate_password(&password).map_err(anyhow_lite::msg)?;
                    store.set_password(&name, &password).await.map_err(fail)?;
                    println!("password changed for {name}@{}", config.hub.domain);
                }
            }
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
