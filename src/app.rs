//! The application: builds every part from the configuration, runs them, and shuts them down
//! gracefully. `main` calls `Application::build(config).await?.run_until_stopped().await`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};
use zundamon_actors::{Channels, SupervisorArgs};

use crate::agent::ZundaAgent;
use crate::config::Config;
use crate::discord::deliver::Delivery;
use crate::discord::gateway::Gateway;
use crate::discord::interactions::{self, InteractionsEndpoint};
use crate::discord::router::{Router, RouterArgs, RouterMsg};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::reload::{self, Hangups, LiveAnswerer, Reloader};
use crate::shutdown::{self, InFlight};
use crate::store::SqliteStore;
use crate::telemetry;

/// How often stored history past its retention is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Of the shutdown grace period, the part kept for closing the gateway, the actors and the store
/// after the drain; each of those steps is bounded by [`TEARDOWN_STEP`].
const TEARDOWN_RESERVE: Duration = Duration::from_secs(3);
const TEARDOWN_STEP: Duration = Duration::from_secs(1);

pub struct Application {
    config: Config,
    local_addr: SocketAddr,
    http: JoinHandle<()>,
    stop_http: watch::Sender<bool>,
    health: Arc<Health>,
    channels: Channels,
    store: Arc<SqliteStore>,
    router: ActorRef<RouterMsg>,
    in_flight: InFlight,
    gateway: Gateway,
    reloader: Reloader,
    hangups: Hangups,
}

impl Application {
    /// Opens the store, binds the health port and starts the actors; fails with a message that
    /// says what to fix.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        telemetry::install_crypto();
        let hangups = Hangups::listen();
        let retention = Duration::from_secs(u64::from(config.store.retention_days) * 86_400);
        let store = Arc::new(SqliteStore::open(&config.store.db_path, retention)?);

        let metrics = Arc::new(Metrics::new());
        let agent = ZundaAgent::new(&config, metrics.clone()).context("cannot build the agent")?;
        // Swappable, so a configuration reload can change the model or persona live.
        let answerer = Arc::new(LiveAnswerer::new(agent));
        let settings = config.channels.settings();
        let channels = Channels::start(SupervisorArgs::new(
            settings,
            answerer.clone(),
            store.clone(),
        ))
        .await
        .context("cannot start the channel supervisor")?;

        let address = format!("{}:{}", config.http.bind_addr, config.http.port);
        let listener = TcpListener::bind(&address).await.with_context(|| {
            format!("cannot listen on {address} for health checks: set PORT to a free port")
        })?;

        let health = Arc::new(Health::new(metrics.clone(), channels.clone()));
        // Probes are served from here on, so the platform sees a live container while the
        // gateway is still connecting (`/readyz` says 503 until it is ready).
        let local_addr = listener.local_addr().context("health listener")?;
        let (stop_http, http_stopped) = watch::channel(false);
        let http = tokio::spawn(health::serve(listener, health.clone(), http_stopped));
        info!("health server listening on http://{local_addr}");
        let in_flight = InFlight::default();
        let (router, _) = Actor::spawn(
            None,
            Router,
            RouterArgs {
                channels: channels.clone(),
                delivery: Arc::new(Delivery::new(
                    &config.discord.api_base,
                    0,
                    config.discord.request_timeout(),
                )),
                bot_token: config.discord.bot_token.clone(),
                limits: config.limits.clone(),
                metrics: metrics.clone(),
                in_flight: in_flight.clone(),
            },
        )
        .await
        .context("cannot start the Discord event actor")?;
        if !config.discord.public_key.trim().is_empty() {
            let verifier = interactions::verifier(&config.discord.public_key)
                .map_err(|problem| anyhow::anyhow!(problem))?;
            health.enable_interactions(InteractionsEndpoint::new(verifier, router.clone()));
            info!(
                "Discord interactions endpoint enabled on POST {}",
                interactions::PATH
            );
        }
        let gateway = Gateway::build(
            &config.discord,
            config.limits.max_question_chars,
            router.clone(),
        )
        .await
        .context("cannot build the Discord client")?;

        let reloader = Reloader::new(
            config.clone(),
            channels.clone(),
            router.clone(),
            answerer,
            metrics,
        );
        Ok(Self {
            config,
            local_addr,
            http,
            stop_http,
            health,
            channels,
            store,
            router,
            in_flight,
            gateway,
            reloader,
            hangups,
        })
    }

    /// The address the health server listens on (useful with `PORT=0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM/SIGINT (reloading the configuration on SIGHUP), then drains: `/readyz` turns 503, accepted questions are
    /// answered, new ones get the restarting reply, the store is flushed. Returns an error if
    /// the gateway fails for good (e.g. an invalid token).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            config,
            local_addr: _,
            http,
            stop_http,
            health,
            channels,
            store,
            router,
            in_flight,
            gateway,
            reloader,
            hangups,
        } = self;
        let pruner = store.clone().spawn_pruner(PRUNE_EVERY);
        let reloads = tokio::spawn(reload::on_sighup(hangups, reloader));

        let shard_manager = gateway.shard_manager();
        let readiness = gateway.watch_readiness(health.clone());
        let mut gateway_task = tokio::spawn(gateway.run());

        let outcome = tokio::select! {
            signal = shutdown::signal() => {
                info!("{signal} received: draining");
                Ok(())
            }
            ended = &mut gateway_task => match ended {
                Ok(Ok(())) => Err(anyhow::anyhow!("the Discord gateway stopped")),
                Ok(Err(err)) => Err(anyhow::anyhow!(
                    "the Discord gateway failed: {err} — check DISCORD_BOT_TOKEN"
                )),
                Err(err) => Err(anyhow::anyhow!("the Discord gateway task failed: {err}")),
            },
        };

        // Drain: stop advertising readiness, turn new questions away kindly, finish the rest.
        let deadline = Instant::now() + Duration::from_secs(config.shutdown.grace_secs);
        reloads.abort();
        health.start_draining();
        readiness.abort();
        let _ = router.cast(RouterMsg::Drain);
        let drain_until = deadline
            .checked_sub(TEARDOWN_RESERVE)
            .filter(|until| *until > Instant::now())
            .unwrap_or_else(Instant::now);
        let pending = in_flight.wait_idle(drain_until).await;
        if pending > 0 {
            error!(
                pending,
                "grace period over: exiting with questions still unanswered"
            );
        } else {
            info!("every accepted question was answered");
        }
        if tokio::time::timeout(TEARDOWN_STEP, shard_manager.shutdown_all())
            .await
            .is_err()
        {
            warn!("the gateway did not close in time");
        }
        gateway_task.abort();
        router.stop(None);
        channels.stop().await;
        if let Err(err) = store.close().await {
            warn!("flushing the conversation store failed: {err}");
        }
        pruner.abort();
        let _ = stop_http.send(true);
        let _ = http.await;
        info!("stopped");
        outcome
    }
}
