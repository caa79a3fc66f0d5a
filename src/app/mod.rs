//! The application: builds every part from the configuration, runs them, and shuts them down
//! gracefully. `main` calls `Application::build(config).await?.run_until_stopped().await`.

pub mod ask;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};
use zundamon_actors::{Channels, SupervisorArgs};

use crate::agent::places::{Ledger, PlacedAgent};
use crate::config::Config;
use crate::discord::deliver::Delivery;
use crate::discord::gateway::Gateway;
use crate::discord::gateway::ModelNames;
use crate::discord::interactions::{self, InteractionsEndpoint};
use crate::discord::parents::Parents;
use crate::ops::health::Health;
use crate::ops::http::{HttpSettings, Routes, Server};
use crate::ops::metrics::Metrics;
use crate::ops::reload::{self, Hangups, LiveAnswerer, Reloader};
use crate::ops::shutdown::{self, InFlight};
use crate::ops::telemetry;
use crate::question::owners::Owners;
use crate::question::policy::Policy;
use crate::question::router::{Router, RouterArgs, RouterMsg};
use crate::store::{self as stores, Backend};

/// How often stored history past its retention is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Of the shutdown grace period, the part kept for closing the gateway, the actors and the store
/// after the drain; each of those steps is bounded by [`TEARDOWN_STEP`].
const TEARDOWN_RESERVE: Duration = Duration::from_secs(3);
const TEARDOWN_STEP: Duration = Duration::from_secs(1);

pub struct Application {
    config: Config,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    http: Vec<JoinHandle<()>>,
    stop_http: watch::Sender<bool>,
    health: Arc<Health>,
    channels: Channels,
    store: Arc<dyn Backend>,
    router: ActorRef<RouterMsg>,
    in_flight: InFlight,
    gateway: Gateway,
    fleet: Option<crate::fleet::Fleet>,
    owners: Owners,
    reloader: Reloader,
    hangups: Hangups,
}

impl Application {
    /// Opens the store, binds the health port and starts the actors; fails with a message that
    /// says what to fix.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        telemetry::install_crypto();
        let hangups = Hangups::listen();
        let store = stores::open(&config.store).await?;

        let metrics = Arc::new(Metrics::new());
        // Where channels sit, the access lists, places and token budgets (reloaded live).
        let parents = Arc::new(Parents::new());
        let policy = Arc::new(Policy::new(
            config.clone(),
            parents.clone(),
            store.clone().into_settings(),
        ));
        policy.warm().await;
        let ledger: Arc<dyn Ledger> = policy.clone();
        let agent = PlacedAgent::new(
            &config,
            metrics.clone(),
            Arc::new(chrono::Utc::now),
            Some(ledger.clone()),
        )
        .context("cannot build the agent")?;
        // Swappable, so a configuration reload can change the model or persona live.
        let answerer = Arc::new(LiveAnswerer::new(agent, Some(ledger)));
        let model_names: ModelNames = {
            let policy = policy.clone();
            Arc::new(move || policy.config().model_names())
        };
        let settings = config.channels.settings();
        let channels = Channels::start(SupervisorArgs::new(
            settings,
            answerer.clone(),
            store.clone().into_conversations(),
        ))
        .await
        .context("cannot start the channel supervisor")?;

        let address = format!("{}:{}", config.http.bind_addr, config.http.port);
        let listener = TcpListener::bind(&address).await.with_context(|| {
            format!("cannot listen on {address} for health checks: set PORT to a free port")
        })?;

        let metrics_bind = config.http.metrics_bind.trim();
        let metrics_listener = if metrics_bind.is_empty() {
            None
        } else {
            Some(TcpListener::bind(metrics_bind).await.with_context(|| {
                format!("cannot listen on {metrics_bind} for metrics: set ZUNDA_METRICS_BIND to a free address")
            })?)
        };

        let health = Arc::new(Health::new(metrics.clone()));
        let interactions_endpoint = Arc::new(OnceLock::new());
        let stats = {
            let channels = channels.clone();
            Arc::new(move || channels.stats())
        };
        let settings = HttpSettings::from_config(&config.http);
        let mut routes = Routes::new()
            .probes(health.clone())
            .interactions(interactions_endpoint.clone());
        if metrics_listener.is_none() {
            routes = routes.metrics(metrics.clone(), stats.clone());
        }
        // Probes are served from here on, so the platform sees a live container while the
        // gateway is still connecting (`/readyz` says 503 until it is ready).
        let local_addr = listener.local_addr().context("health listener")?;
        let (stop_http, http_stopped) = watch::channel(false);
        let mut http = vec![tokio::spawn(
            Server::new(routes, settings.clone(), metrics.clone())
                .serve(listener, http_stopped.clone()),
        )];
        info!("health server listening on http://{local_addr}");
        let mut metrics_addr = None;
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr().context("metrics listener")?;
            let routes = Routes::new().metrics(metrics.clone(), stats);
            http.push(tokio::spawn(
                Server::new(routes, settings, metrics.clone()).serve(listener, http_stopped),
            ));
            info!("metrics server listening on http://{addr}");
            metrics_addr = Some(addr);
        }
        let in_flight = InFlight::default();
        // HTTP interactions on PostgreSQL: instances behind a load balancer share the channels.
        let fleet_postgres = store
            .clone()
            .postgres()
            .filter(|_| !config.discord.public_key.trim().is_empty());
        let fleet_store = fleet_postgres
            .clone()
            .map(|postgres| Arc::new(crate::store::FleetPending(postgres)));
        // One REST client (it reads the system's root certificates once): the event actor's, and
        // the endpoint's channel lookups.
        let delivery = Arc::new(
            Delivery::new(
                &config.discord.api_base,
                0,
                config.discord.request_timeout(),
            )
            .reading_channels_as(config.discord.bot_token.expose())
            .counting_unknown_follow_ups(metrics.follow_ups_unknown()),
        );
        let (router, _) = Actor::spawn(
            None,
            Router,
            RouterArgs {
                channels: channels.clone(),
                delivery: delivery.clone(),
                bot_token: config.discord.bot_token.clone(),
                limits: config.limits.clone(),
                metrics: metrics.clone(),
                in_flight: in_flight.clone(),
                store: store.clone(),
                answer_budget: Duration::from_secs(config.openai.answer_timeout_secs.max(1)),
                stream_every: config.stream.edit_every(),
                fleet: fleet_store.clone(),
                policy: policy.clone(),
            },
        )
        .await
        .context("cannot start the Discord event actor")?;
        // Questions a process that is gone accepted and did not answer go first, ahead of
        // anything the gateway or the endpoint brings from now on; a live process's are its own.
        // With a shared store, each process of a shard range takes only its own guilds'.
        let shards = config.gateway.shards();
        let owners = Owners::start(
            store.clone().into_pending(),
            router.clone(),
            Duration::from_secs(config.fleet.lease_secs.max(1)),
            Arc::new(move |guild| shards.owns(guild)),
        )
        .await;
        if !config.discord.public_key.trim().is_empty() {
            let verifier = interactions::verifier(&config.discord.public_key)
                .map_err(|problem| anyhow::anyhow!(problem))?;
            let endpoint = InteractionsEndpoint::new(verifier, router.clone())
                .with_metrics(metrics.clone())
                .with_places(interactions::Places {
                    parents: parents.clone(),
                    delivery: delivery.clone(),
                    model_names: model_names.clone(),
                });
            let _ = interactions_endpoint.set(endpoint);
            info!(
                "Discord interactions endpoint enabled on POST {}",
                interactions::PATH
            );
        }
        let fleet = match fleet_postgres {
            Some(postgres) => Some(crate::fleet::Fleet::start(
                postgres,
                crate::store::postgres::parse_url(&config.store.database_url)?,
                router.clone(),
                crate::fleet::FleetSettings {
                    lease: Duration::from_secs(config.fleet.lease_secs),
                    keep_idle: Duration::from_secs(config.channels.idle_secs)
                        + Duration::from_secs(config.fleet.lease_secs),
                    holder: store.instance().to_owned(),
                    metrics: metrics.clone(),
                },
            )),
            None => None,
        };
        let gateway = Gateway::build(
            &config.discord,
            &config.gateway,
            config.limits.max_question_chars,
            router.clone(),
            (parents, model_names),
        )
        .await
        .context("cannot build the Discord client")?;

        let reloader = Reloader::new(
            config.clone(),
            channels.clone(),
            router.clone(),
            answerer,
            metrics,
        )
        .with_policy(policy);
        Ok(Self {
            config,
            local_addr,
            metrics_addr,
            http,
            stop_http,
            health,
            channels,
            store,
            router,
            in_flight,
            gateway,
            fleet,
            owners,
            reloader,
            hangups,
        })
    }

    /// The address the health server listens on (useful with `PORT=0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on when `ZUNDA_METRICS_BIND` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until SIGTERM/SIGINT (reloading the configuration on SIGHUP), then drains: `/readyz` turns 503, accepted questions are
    /// answered, new ones get the restarting reply, the store is flushed. Returns an error if
    /// the gateway fails for good (e.g. an invalid token).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            config,
            local_addr: _,
            metrics_addr: _,
            http,
            stop_http,
            health,
            channels,
            store,
            router,
            in_flight,
            gateway,
            fleet,
            owners,
            reloader,
            hangups,
        } = self;
        let pruner = stores::spawn_pruner(store.clone(), PRUNE_EVERY);
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

        // Drain: stop advertising readiness and stop the gateway, so new events go to another
        // process of the bot (or wait for the next one); turn new HTTP questions away kindly;
        // finish the rest.
        let deadline = Instant::now() + Duration::from_secs(config.shutdown.grace_secs);
        reloads.abort();
        health.start_draining();
        readiness.abort();
        if tokio::time::timeout(TEARDOWN_STEP, shard_manager.shutdown_all())
            .await
            .is_err()
        {
            warn!("the gateway did not close in time");
        }
        if !gateway_task.is_finished() {
            gateway_task.abort();
            let _ = gateway_task.await;
        }
        // A call, not a cast: when it returns, every event the router took before the drain
        // holds its in-flight count, so the wait below cannot miss one.
        if let Err(err) = router.call(RouterMsg::Drain, Some(TEARDOWN_STEP)).await {
            warn!("the event actor did not confirm the drain: {err}");
        }
        owners.drain();
        if let Some(fleet) = &fleet {
            fleet.drain();
        }
        let drain_until = deadline
            .checked_sub(TEARDOWN_RESERVE)
            .filter(|until| *until > Instant::now())
            .unwrap_or_else(Instant::now);
        let pending = in_flight.wait_idle(drain_until).await;
        if let Some(fleet) = fleet {
            fleet.stop().await;
        }
        if pending > 0 {
            in_flight.abandon();
            warn!(
                pending,
                "grace period over: the questions still unanswered stay stored for the next process"
            );
        } else {
            info!("every accepted question was answered");
        }
        owners.stop().await;
        // Every question task has ended (or is left to the next process): whatever is still
        // running past the reserve is cancelled, so nothing writes after the store closes.
        let cancelled = in_flight.close(Instant::now() + TEARDOWN_STEP).await;
        if cancelled > 0 {
            warn!(cancelled, "cancelled tasks still running at shutdown");
        }
        router.stop(None);
        channels.stop().await;
        if let Err(err) = store.close().await {
            warn!("flushing the conversation store failed: {err}");
        }
        pruner.abort();
        let _ = stop_http.send(true);
        for server in http {
            let _ = server.await;
        }
        info!("stopped");
        outcome
    }
}
