//! The serenity gateway client. Its event handler stays thin: it turns each event into a message
//! for the event actor and returns; it never waits for an answer.

use ractor::ActorRef;
use serenity::all::{
    ConnectionStage, Context, EventHandler, GatewayIntents, Guild, GuildChannel, Interaction,
    Message, PartialGuildChannel, Ready, ResumedEvent, ThreadListSyncEvent,
};
use serenity::gateway::ShardManager;
use serenity::http::HttpBuilder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::command::{autocomplete_choices, command_use, CommandUse};
use super::deliver::autocomplete_response;
use super::parents::Parents;
use super::registration::Registration;
use super::COMMAND_NAME;
use crate::config::shards::ShardRange;
use crate::config::{DiscordConfig, GatewayConfig};
use crate::ops::health::Health;
use crate::question::router::RouterMsg;

/// The model names `/zunda-model` offers (the running configuration's).
pub type ModelNames = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Slash commands need no privileged intent, and Discord delivers the content of messages that
/// mention the bot without MESSAGE_CONTENT; asking for a privileged intent the operator has not
/// enabled would make the gateway refuse the connection.
/// How often gateway readiness is checked.
const READINESS_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub const INTENTS: GatewayIntents = GatewayIntents::GUILDS.union(GatewayIntents::GUILD_MESSAGES);

struct Handler {
    router: ActorRef<RouterMsg>,
    registration: Registration,
    shards: ShardRange,
    registered: AtomicBool,
    parents: Arc<Parents>,
    model_names: ModelNames,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        info!(
            user = %ready.user.name,
            session = ready.session_id.len(),
            shard = ?ready.shard.map(|shard| shard.id.0),
            shards = %self.shards,
            "gateway session ready"
        );
        let _ = self.router.cast(RouterMsg::Ready {
            application_id: ready.application.id.get(),
            bot_user_id: ready.user.id.get(),
        });
        // With several processes, the one running shard 0 registers the command (once).
        let registers = self.shards.first == 0;
        if registers && !self.registered.swap(true, Ordering::AcqRel) {
            self.register_command(&ctx).await;
        }
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        info!("gateway session resumed");
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let received = Instant::now();
        let command = match interaction {
            Interaction::Command(command) => command,
            Interaction::Autocomplete(autocomplete) => {
                let typed = autocomplete
                    .data
                    .autocomplete()
                    .map(|option| option.value.to_owned())
                    .unwrap_or_default();
                let choices = autocomplete_choices(&(self.model_names)(), &typed);
                let response = autocomplete_response(&choices);
                let answered = ctx
                    .http
                    .create_interaction_response(
                        autocomplete.id,
                        &autocomplete.token,
                        &response,
                        Vec::new(),
                    )
                    .await;
                if let Err(err) = answered {
                    warn!("cannot answer an autocomplete: {err}");
                }
                return;
            }
            _ => return,
        };
        // Learned before the event actor judges the question by its place (no await before the
        // hand-over: events stay in gateway order).
        if let Some(channel) = &command.channel {
            self.parents.learn_partial(channel);
        }
        let message = match command_use(command, received) {
            Ok(CommandUse::Question(event)) => RouterMsg::Command(event),
            Ok(CommandUse::Control(event)) => RouterMsg::Control(event),
            Err(other) => {
                warn!(name = %other, "ignoring an unknown command");
                return;
            }
        };
        if self.router.cast(message).is_err() {
            error!("the event actor is gone: an interaction was dropped");
        }
    }

    async fn guild_create(&self, _ctx: Context, guild: Guild, _is_new: Option<bool>) {
        for channel in guild.channels.values().chain(&guild.threads) {
            self.parents.learn_guild_channel(channel);
        }
        self.parents.learn(guild.id.get(), None);
    }

    async fn channel_create(&self, _ctx: Context, channel: GuildChannel) {
        self.parents.learn_guild_channel(&channel);
    }

    async fn channel_update(&self, _ctx: Context, _old: Option<GuildChannel>, new: GuildChannel) {
        self.parents.learn_guild_channel(&new);
    }

    async fn channel_delete(
        &self,
        _ctx: Context,
        channel: GuildChannel,
        _messages: Option<Vec<Message>>,
    ) {
        self.parents.forget(channel.id.get());
    }

    async fn thread_create(&self, _ctx: Context, thread: GuildChannel) {
        self.parents.learn_guild_channel(&thread);
    }

    async fn thread_update(&self, _ctx: Context, _old: Option<GuildChannel>, new: GuildChannel) {
        self.parents.learn_guild_channel(&new);
    }

    async fn thread_delete(
        &self,
        _ctx: Context,
        thread: PartialGuildChannel,
        _full: Option<GuildChannel>,
    ) {
        self.parents.forget(thread.id.get());
    }

    async fn thread_list_sync(&self, _ctx: Context, sync: ThreadListSyncEvent) {
        for thread in &sync.threads {
            self.parents.learn_guild_channel(thread);
        }
    }

    async fn message(&self, _ctx: Context, message: Message) {
        // Never answer bots (including ourselves): two bots could otherwise talk forever.
        if message.author.bot {
            return;
        }
        let _ = self.router.cast(RouterMsg::Message {
            channel_id: message.channel_id.get(),
            message_id: message.id.get(),
            author_id: message.author.id.get(),
            mentioned: message.mentions.iter().map(|user| user.id.get()).collect(),
        });
    }
}

impl Handler {
    async fn register_command(&self, ctx: &Context) {
        if let Err(err) = self.registration.register(&ctx.http).await {
            self.registered.store(false, Ordering::Release);
            error!(
                scope = ?self.registration.scope,
                install = ?self.registration.install,
                guild_id = self.registration.guild_id,
                "cannot register /{COMMAND_NAME}: {err} — check DISCORD_GUILD_ID (or ZUNDA_COMMAND_SCOPE, ZUNDA_INSTALL) and that the bot was invited with the applications.commands scope"
            );
        }
    }
}

/// The gateway client, running on a thread of its own, and the handle that stops it.
///
/// serenity runs each gateway event on a task of its own. On a multi-thread runtime those tasks
/// start in any order, so two questions dispatched back to back (a RESUME replay, two members
/// asking at once) could reach the event actor swapped. On a current-thread runtime tasks start
/// in the order they were spawned, which is the order the shard read the events, and the handler
/// hands each event to the event actor before its first `.await`: the event actor sees events in
/// gateway order, whatever their spacing.
pub struct Gateway {
    shard_manager: Arc<ShardManager>,
    ended: oneshot::Receiver<Result<(), serenity::Error>>,
}

impl Gateway {
    pub async fn build(
        config: &DiscordConfig,
        gateway: &GatewayConfig,
        max_question_chars: usize,
        router: ActorRef<RouterMsg>,
        (parents, model_names): (Arc<Parents>, ModelNames),
    ) -> Result<Self, serenity::Error> {
        let token = config.bot_token.expose().to_owned();
        let api_base = config
            .uses_custom_api_base()
            .then(|| config.api_base.trim_end_matches('/').to_owned());
        let shards = gateway.shards();
        let handler = Handler {
            router,
            registration: Registration {
                scope: gateway.command_scope,
                install: config.install(),
                guild_id: config.guild_id,
                max_question_chars,
            },
            shards,
            registered: AtomicBool::new(false),
            parents,
            model_names,
        };
        let (built_tx, built) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("gateway")
            .build()
            .map_err(serenity::Error::Io)?;
        std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Built here so that the shard manager, queuer and runners all live on
                    // this runtime.
                    let http = match api_base {
                        // serenity honours a proxy base URL only with its rate limiter off; our
                        // own delivery client retries 429s for what matters.
                        Some(base) => HttpBuilder::new(&token)
                            .proxy(base)
                            .ratelimiter_disabled(true)
                            .build(),
                        None => HttpBuilder::new(&token).build(),
                    };
                    let built_client =
                        serenity::client::ClientBuilder::new_with_http(http, INTENTS)
                            .event_handler(handler)
                            .await;
                    let mut client = match built_client {
                        Ok(client) => client,
                        Err(err) => {
                            let _ = built_tx.send(Err(err));
                            return;
                        }
                    };
                    if built_tx.send(Ok(client.shard_manager.clone())).is_err() {
                        return;
                    }
                    // serenity 0.12 reads the range's end as the last shard (inclusive).
                    let started = client
                        .start_shard_range(shards.first..shards.last, shards.total)
                        .await;
                    let _ = ended_tx.send(started);
                });
            })
            .map_err(serenity::Error::Io)?;
        let shard_manager = built.await.map_err(|_| {
            serenity::Error::Other("the gateway thread ended before the client was built")
        })??;
        Ok(Self {
            shard_manager,
            ended,
        })
    }

    pub fn shard_manager(&self) -> Arc<ShardManager> {
        self.shard_manager.clone()
    }

    /// Keeps `health`'s gateway readiness true exactly while every shard is connected. Polling
    /// the shard runners is the reliable signal: serenity restarts a shard that failed to resume
    /// without any stage-change event reaching the handler.
    pub fn watch_readiness(&self, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
        let shard_manager = self.shard_manager();
        tokio::spawn(async move {
            let mut ready = false;
            let mut tick = tokio::time::interval(READINESS_POLL);
            loop {
                tick.tick().await;
                let connected = {
                    let runners = shard_manager.runners.lock().await;
                    !runners.is_empty()
                        && runners
                            .values()
                            .all(|runner| runner.stage == ConnectionStage::Connected)
                };
                if connected != ready {
                    if connected {
                        info!("gateway connected: ready");
                    } else {
                        warn!("gateway not connected: not ready until it reconnects");
                    }
                    ready = connected;
                }
                health.set_gateway_ready(connected);
            }
        })
    }

    /// Runs the gateway until it fails for good (e.g. an invalid token) or is shut down.
    pub async fn run(self) -> Result<(), serenity::Error> {
        self.ended
            .await
            .unwrap_or(Err(serenity::Error::Other("the gateway thread ended")))
    }
}
