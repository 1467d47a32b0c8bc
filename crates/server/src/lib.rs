//! The `entente` server: configuration, CLI actions, listeners, the router and the HTTP API.

pub mod accounts;
pub mod config;
pub mod dns;
pub mod http;
pub mod hub;
pub mod oscar;
pub mod router;
pub mod sip_edge;
pub mod tls;
pub mod xmpp_edge;

use config::Config;
use entente_policy::{FederationMode, LoginThrottle, Policy, PolicyConfig};
use entente_store::{SqliteStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use router::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What every listener and session shares.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the server started with (listeners, partners' links).
    pub config: Arc<Config>,
    /// The configuration in force, replaced by policy reloads.
    pub current: Arc<std::sync::RwLock<Arc<Config>>>,
    pub router: Arc<Router>,
    pub logins: Arc<LoginThrottle>,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    /// TLS for partner links (XMPP s2s, SIP over TLS).
    pub tls: Arc<tls::TlsContext>,
}

impl AppState {
    pub fn current(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What listener tasks return.
pub type Tasks = tokio::task::JoinSet<std::io::Result<()>>;

/// Opens the configured store, creating the data directory if needed.
pub async fn open_store(config: &Config) -> anyhow_lite::Result<Arc<dyn Store>> {
    let dir = &config.storage.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow_lite::msg(format!("cannot create {}: {e}", dir.display())))?;
    let store = SqliteStore::open(&dir.join("entente.sqlite3"))
        .await
        .map_err(|e| {
            anyhow_lite::msg(format!(
                "cannot open the database in {}: {e}",
                dir.display()
            ))
        })?;
    Ok(Arc::new(store))
}

pub fn policy(config: &Config) -> Policy {
    Policy::new(policy_config(config))
}

/// The policy a configuration sets: federation mode, partner policies, sizes and rates.
pub fn policy_config(config: &Config) -> PolicyConfig {
    let l = &config.limits;
    let rate = |per_second, burst| entente_policy::Rate { per_second, burst };
    PolicyConfig {
        mode: match config.federation.mode {
            config::FederationMode::Allowlist => FederationMode::Allowlist,
            config::FederationMode::Open => FederationMode::Open,
        },
        partners: config
            .partners
            .iter()
            .map(|p| (p.domain.to_lowercase(), p.policy(l)))
            .collect(),
        max_body_bytes: l.max_body_bytes,
        rates: entente_policy::Rates {
            sender: rate(l.sender_rate, l.sender_burst),
            signals: rate(l.signal_rate, l.signal_burst),
            partner: rate(l.partner_rate, l.partner_burst),
        },
    }
}

/// What a policy reload changed.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    /// The file read, if the server was started with one.
    pub file: Option<String>,
    /// Partners listed now, with the policy in force.
    pub partners: usize,
    /// Partners whose connection settings (protocol, address, auth) changed or that are new:
    /// their policy applies now, their links change at the next restart.
    pub restart_needed: Vec<String>,
}

/// Reads the configuration file again and applies what can change while serving: partner
/// policies (traffic, strangers, sizes, rates; removed partners stop federating), limits on
/// senders and partner domains, content rules and audit settings.
pub fn reload(state: &AppState) -> anyhow_lite::Result<Reloaded> {
    let running = state.current();
    let next = match &running.source {
        Some(path) => Config::load(Some(path)).map_err(|e| anyhow_lite::msg(e.to_string()))?,
        None => (*running).clone(),
    };
    let inspector = content_rules(&next)?;
    let restart_needed = next
        .partners
        .iter()
        .filter(|p| {
            // An XMPP partner's required authentication is policy, checked on every stream;
            // a SIP partner's decides which endpoint (UDP/TCP or TLS) serves it.
            !state.config.partners.iter().any(|q| {
                q.domain.eq_ignore_ascii_case(&p.domain)
                    && q.protocol == p.protocol
                    && q.address == p.address
                    && (q.auth == p.auth || p.protocol == config::PartnerProtocol::Xmpp)
            })
        })
        .map(|p| p.domain.clone())
        .collect();
    state.router.policy().reload(policy_config(&next));
    state.router.set_rules(inspector);
    state.router.set_outbreak_settings(outbreak_settings(&next));
    state.router.set_audit_bodies(next.protection.audit_bodies);
    let report = Reloaded {
        file: next.source.as_ref().map(|p| p.display().to_string()),
        partners: next.partners.len(),
        restart_needed,
    };
    *state.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    tracing::info!(?report, "policy reloaded");
    Ok(report)
}

/// The content rules in force: the configured file, or the defaults.
pub fn content_rules(config: &Config) -> anyhow_lite::Result<entente_policy::Inspector> {
    let text = match &config.protection.rules {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow_lite::msg(format!("[protection] rules {}: {e}", path.display())))?,
        None => router::DEFAULT_RULES.to_string(),
    };
    entente_policy::Inspector::from_rules(&text)
        .map_err(|e| anyhow_lite::msg(format!("[protection] rules: {e}")))
}

/// The outbreak containment settings.
pub fn outbreak_settings(config: &Config) -> entente_policy::OutbreakSettings {
    let p = &config.protection;
    entente_policy::OutbreakSettings {
        recipients: p.outbreak_recipients.max(1),
        window: Duration::from_secs(p.outbreak_window_secs),
        quarantine: Duration::from_secs(p.quarantine_secs),
        block: Duration::from_secs(p.block_secs),
        ..Default::default()
    }
}

/// Runs the hub until `shutdown` is cancelled, then drains. Prints one line per listener.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow_lite::Result<()> {
    let config = Arc::new(config);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow_lite::msg(format!("metrics: {e}")))?;
    let store = open_store(&config).await?;
    tls::ensure_certificate(&config)?;
    let tls = Arc::new(tls::TlsContext::load(&config)?);
    let router = Arc::new(Router::new(
        config.hub.domain.to_lowercase(),
        store,
        policy(&config),
    ));
    router
        .load_blocks()
        .await
        .map_err(|e| anyhow_lite::msg(format!("cannot read block lists: {e}")))?;
    router.set_protection(content_rules(&config)?, outbreak_settings(&config));
    match router.load_containment().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            n,
            "outbreak containment from before the restart is in force"
        ),
        Err(e) => {
            return Err(anyhow_lite::msg(format!(
                "cannot read outbreak containment: {e}"
            )))
        }
    }
    router.set_audit_bodies(config.protection.audit_bodies);
    {
        // Audit retention: prune at start and every hour.
        let router = router.clone();
        let keep = Duration::from_secs(
            config
                .protection
                .audit_retention_days
                .saturating_mul(86_400),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let cutoff = time::OffsetDateTime::now_utc() - keep;
                let before = (cutoff.unix_timestamp_nanos() / 1_000_000) as i64;
                match router.store().audit_prune(before).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(removed = n, "audit entries past retention removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "audit retention failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let l = &config.limits;
    let logins = Arc::new(LoginThrottle::new(
        l.login_free_attempts,
        l.login_max_attempts,
        Duration::from_secs(l.login_window_secs),
    ));
    let state = AppState {
        current: Arc::new(std::sync::RwLock::new(config.clone())),
        config: config.clone(),
        router,
        logins,
        metrics,
        shutdown: shutdown.clone(),
        tls,
    };
    let listeners = config.listeners();
    let mut tasks = Tasks::new();
    #[cfg(unix)]
    {
        // SIGHUP reloads the policy, as the admin API's policy/reload does.
        let state = state.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| anyhow_lite::msg(format!("cannot watch SIGHUP: {e}")))?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = hup.recv() => if got.is_none() { return },
                    _ = state.shutdown.cancelled() => return,
                }
                if let Err(e) = reload(&state) {
                    tracing::error!(error = %e, "policy reload failed; the previous policy stays");
                }
            }
        });
    }

    if let Some(addr) = listeners.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow_lite::msg(format!("cannot listen for http on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| anyhow_lite::msg(e.to_string()))?;
        println!("listening http {local}");
        println!("web client http://{local}/");
        let app =
            http::app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = shutdown.clone();
        // Small frames go out at once: Nagle's delay would cap a conversation at ~25 round trips/s.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
    }
    if let Some(addr) = listeners.oscar {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow_lite::msg(format!("cannot listen for oscar on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| anyhow_lite::msg(e.to_string()))?;
        println!("listening oscar {local}");
        let state = state.clone();
        tasks.spawn(async move {
            oscar::serve(state, listener).await;
            Ok(())
        });
    }
    xmpp_edge::start(&state, &listeners, &mut tasks).await?;
    sip_edge::start(&state, &listeners, &mut tasks).await?;
    use std::io::Write;
    let _ = std::io::stdout().flush();

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining sessions");
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "listener ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not close within 10 s");
    }
    Ok(())
}

/// A tiny error type for the binary's top level: a sentence for the operator.
pub mod anyhow_lite {
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn msg(s: impl Into<String>) -> Error {
        Error(s.into())
    }
}
