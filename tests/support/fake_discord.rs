//! A fake Discord for end-to-end tests: the REST API under `/api/v10` (hyper) and a gateway
//! websocket (tokio-tungstenite), both on 127.0.0.1 port 0.
//!
//! Point serenity at it with `HttpBuilder::new(token).proxy(fake.base_url())
//! .ratelimiter_disabled(true)`; the bot's own REST client takes `base_url()` as its API base.
//! The gateway speaks just enough of the protocol for serenity 0.12.5: HELLO, IDENTIFY → READY,
//! heartbeat ACKs, RESUME → RESUMED (replaying nothing), sequence numbers. Tests drive it with
//! `send_interaction` / `send_message`, inspect every REST call with `requests()` /
//! `wait_for_requests`, and inject trouble with `fail_next`, `commit_then_fail_next`, `delay_next`
//! and `drop_gateway`. `GET /channels/{id}/messages` lists the channel's messages, interaction
//! responses and follow-ups included (with `interaction_metadata`), as the bot token sees them.
//!
//! Like Discord, it refuses an interaction callback that comes later than 3 s after the
//! interaction was sent (10062 Unknown interaction) or twice (40060), webhook edits for unknown or
//! unacknowledged interactions (10015), empty or over-2000-unit messages (50006 / 50035), and
//! channel messages without a `Bot` authorization (401). serenity turns an event missing a
//! required field into `Event::Unknown` and drops it silently, so every payload here carries the
//! fields serenity 0.12.5 requires; `tests/discord_fake.rs` checks them against serenity's types.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::multipart::{self, RecordedFile};

/// The application (and, as on real Discord, the bot user) id.
pub const APP_ID: u64 = 1_180_000_000_000_000_001;
/// The bot user's id.
pub const BOT_USER_ID: u64 = APP_ID;
/// The bot user's name.
pub const BOT_USER_NAME: &str = "zundamon";
/// The one guild the bot is in.
pub const GUILD_ID: u64 = 1_180_000_000_000_000_100;
/// The id `/zunda` gets when registered (and that interactions refer to).
pub const COMMAND_ID: u64 = 1_180_000_000_000_000_200;
/// Discord's default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(41_250);
/// How long Discord waits for an interaction to be acknowledged.
pub const ACK_WINDOW: Duration = Duration::from_secs(3);

/// One REST request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// When it arrived (before any injected delay).
    pub at: Instant,
    /// `GET`, `POST`…
    pub method: String,
    /// The URL path, e.g. `/api/v10/channels/1/messages` (no query string).
    pub path: String,
    /// The query string (without `?`), empty if none.
    pub query: String,
    /// The JSON body, `Value::Null` if empty or not JSON.
    pub body: Value,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The status the fake answered with.
    pub status: u16,
    /// The files of a `multipart/form-data` request (whose `payload_json` is `body`).
    pub files: Vec<RecordedFile>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is `method` on a path containing `fragment`.
    pub fn is(&self, method: &str, fragment: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.path.contains(fragment)
    }
}

/// An interaction dispatched to the bot.
#[derive(Clone, Debug)]
pub struct SentInteraction {
    /// The interaction id.
    pub id: u64,
    /// The interaction token (unique per interaction).
    pub token: String,
    /// When it was queued on the gateway.
    pub sent_at: Instant,
}

enum Action {
    Fail {
        status: u16,
        retry_after: Option<f64>,
    },
    Delay(Duration),
    /// The request takes effect, but the answer is this status (a server error after the
    /// message was created).
    CommitThenFail(u16),
}

struct Rule {
    method: String,
    fragment: String,
    remaining: usize,
    action: Action,
}

struct InteractionState {
    id: u64,
    channel_id: u64,
    sent_at: Instant,
    acknowledged: bool,
    original: Option<Value>,
    /// Follow-up messages, in the order posted (deleted ones removed).
    follow_ups: Vec<Value>,
    /// Requests on this token's webhook routes in the current rate-limit window.
    bucket: Vec<Instant>,
}

enum Outgoing {
    Dispatch {
        t: &'static str,
        d: Value,
    },
    /// Several dispatches written back to back and flushed once, so they reach the client in one
    /// read (as a RESUME replay or simultaneous events do).
    Batch(Vec<(&'static str, Value)>),
    Drop(oneshot::Sender<()>),
}

struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    ready: bool,
    /// `[shard_id, shard_count]` from IDENTIFY.
    shard: Option<(u64, u64)>,
    seq: u64,
}

impl Connection {
    /// Whether Discord would send this guild's events on this connection:
    /// `shard_id = (guild_id >> 22) % shard_count`.
    fn serves(&self, guild_id: u64) -> bool {
        match self.shard {
            Some((id, count)) if count > 1 => (guild_id >> 22) % count == id,
            _ => true,
        }
    }
}

#[derive(Default)]
struct Gateway {
    /// Every open connection; several sessions of one bot (a rolling deploy, or shards) each get
    /// the events meant for them.
    connections: Vec<Connection>,
    next_connection: u64,
    sessions: Vec<String>,
    identifies: usize,
    resumes: usize,
    heartbeats: usize,
    last_identify: Option<Value>,
}

struct Shared {
    ws_url: String,
    heartbeat: Duration,
    next_id: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
    rules: Mutex<Vec<Rule>>,
    interactions: Mutex<HashMap<String, InteractionState>>,
    commands: Mutex<Vec<Value>>,
    gateway: Mutex<Gateway>,
    /// Channel messages created with `enforce_nonce`, by (channel, nonce).
    nonces: Mutex<HashMap<(u64, String), Value>>,
    /// Every channel message actually created (a nonce repeat creates none).
    created: Mutex<Vec<Value>>,
    /// A per-token rate limit on webhook routes (requests, window), as Discord applies to
    /// interaction webhooks: beyond it, 429 with `Retry-After`; every answer carries
    /// `X-RateLimit-Remaining` / `X-RateLimit-Reset-After`.
    webhook_bucket: Mutex<Option<(usize, Duration)>>,
    /// Until then, new gateway connections are closed at once (an outage).
    refuse_until: Mutex<Option<Instant>>,
    /// Reading channel messages is refused (403), as in a channel the bot cannot see.
    channel_reads_forbidden: Mutex<bool>,
    /// Channels `GET /channels/{id}` describes: id → parent id.
    channels: Mutex<HashMap<u64, Option<u64>>>,
    /// Files served at `/attachments/{name}` (as Discord's CDN serves attachments): content
    /// type and bytes.
    files: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock has failed already; keep serving the others.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn snowflake(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The fake Discord; it stops listening and hangs up the gateway when dropped.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    base_url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Hang up on the bot too, so a client outliving the fake sees Discord go away.
        for connection in lock(&self.shared.gateway).connections.drain(..) {
            let (done, _) = oneshot::channel();
            let _ = connection.tx.send(Outgoing::Drop(done));
        }
    }
}

impl FakeDiscord {
    /// Starts REST and gateway servers with Discord's default heartbeat interval.
    pub async fn start() -> FakeDiscord {
        Self::start_with_heartbeat(DEFAULT_HEARTBEAT).await
    }

    /// Starts the servers, asking gateway clients to heartbeat every `heartbeat`.
    pub async fn start_with_heartbeat(heartbeat: Duration) -> FakeDiscord {
        let rest = TcpListener::bind("127.0.0.1:0").await.expect("bind REST");
        let ws = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let base_url = format!("http://{}", rest.local_addr().expect("REST address"));
        let shared = Arc::new(Shared {
            ws_url: format!("ws://{}", ws.local_addr().expect("gateway address")),
            heartbeat,
            next_id: AtomicU64::new(1_200_000_000_000_000_000),
            requests: Mutex::default(),
            rules: Mutex::default(),
            interactions: Mutex::default(),
            commands: Mutex::default(),
            gateway: Mutex::default(),
            nonces: Mutex::default(),
            created: Mutex::default(),
            webhook_bucket: Mutex::default(),
            refuse_until: Mutex::default(),
            channel_reads_forbidden: Mutex::default(),
            channels: Mutex::default(),
            files: Mutex::default(),
        });
        let tasks = vec![
            tokio::spawn(serve_rest(rest, Arc::clone(&shared))),
            tokio::spawn(serve_gateway(ws, Arc::clone(&shared))),
        ];
        FakeDiscord {
            shared,
            base_url,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT`, to which clients append `/api/v10/...`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `ws://127.0.0.1:PORT`, the gateway URL handed out by `GET /gateway`.
    pub fn gateway_url(&self) -> String {
        self.shared.ws_url.clone()
    }

    /// Waits until a gateway session has identified or resumed and is still connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.live_connection().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn live_connection(&self) -> Option<mpsc::UnboundedSender<Outgoing>> {
        self.live_connections(GUILD_ID).into_iter().next()
    }

    /// The senders of the ready sessions that get `guild_id`'s events.
    fn live_connections(&self, guild_id: u64) -> Vec<mpsc::UnboundedSender<Outgoing>> {
        lock(&self.shared.gateway)
            .connections
            .iter()
            .filter(|c| c.ready && c.serves(guild_id))
            .map(|c| c.tx.clone())
            .collect()
    }

    /// How many sessions are ready.
    pub fn ready_sessions(&self) -> usize {
        let gateway = lock(&self.shared.gateway);
        gateway.connections.iter().filter(|c| c.ready).count()
    }

    /// Waits until `count` sessions are ready.
    pub async fn wait_sessions(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.ready_sessions() < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The live sessions for `guild_id`, waiting up to 10 s for one.
    async fn sessions(&self, what: &str, guild_id: u64) -> Vec<mpsc::UnboundedSender<Outgoing>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = self.live_connections(guild_id);
            if !live.is_empty() {
                return live;
            }
            assert!(
                Instant::now() < deadline,
                "fake Discord: no gateway session to send {what} on (is the bot connected?)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Dispatches `/zunda` for each question, in this order, to one channel in a single gateway
    /// write: the events reach the bot in one read, with consecutive sequence numbers.
    pub async fn send_interactions_at_once(
        &self,
        channel_id: u64,
        user_id: u64,
        questions: &[&str],
    ) -> Vec<SentInteraction> {
        let sessions = self.sessions("INTERACTION_CREATE", GUILD_ID).await;
        let mut sent = Vec::new();
        let mut batch = Vec::new();
        for question in questions {
            let interaction = self.register_interaction(channel_id);
            let d = interaction_payload(
                interaction.id,
                &interaction.token,
                channel_id,
                user_id,
                "batch",
                question,
            );
            batch.push(("INTERACTION_CREATE", d));
            sent.push(interaction);
        }
        for session in sessions {
            let _ = session.send(Outgoing::Batch(batch.clone()));
        }
        sent
    }

    /// Dispatches `/zunda` from a guild other than [`GUILD_ID`] (for shard tests); only the
    /// sessions whose shard owns `guild_id` receive it.
    pub async fn send_guild_interaction(
        &self,
        guild_id: u64,
        channel_id: u64,
        question: &str,
    ) -> SentInteraction {
        let sessions = self.sessions("INTERACTION_CREATE", guild_id).await;
        let sent = self.register_interaction(channel_id);
        let mut d = interaction_payload(sent.id, &sent.token, channel_id, 42, "guest", question);
        d["guild_id"] = json!(guild_id.to_string());
        for session in sessions {
            let _ = session.send(Outgoing::Dispatch {
                t: "INTERACTION_CREATE",
                d: d.clone(),
            });
        }
        sent
    }

    /// Dispatches INTERACTION_CREATE for `/zunda question:<question>` from a guild member.
    pub async fn send_interaction(
        &self,
        channel_id: u64,
        user_id: u64,
        user_name: &str,
        question: &str,
    ) -> SentInteraction {
        let sessions = self.sessions("INTERACTION_CREATE", GUILD_ID).await;
        // Known to the REST side before the bot can possibly answer it.
        let sent = self.register_interaction(channel_id);
        let d = interaction_payload(
            sent.id,
            &sent.token,
            channel_id,
            user_id,
            user_name,
            question,
        );
        let t = "INTERACTION_CREATE";
        for session in sessions {
            session
                .send(Outgoing::Dispatch { t, d: d.clone() })
                .expect("gateway connection closed");
        }
        sent
    }

    /// Makes the REST side know a new interaction without dispatching it, for tests of a REST
    /// client alone. Its 3 s acknowledgement window starts now.
    pub fn register_interaction(&self, channel_id: u64) -> SentInteraction {
        let id = self.shared.snowflake();
        let token = format!("aW50ZXJhY3Rpb246{id}OmZha2U");
        let sent_at = Instant::now();
        let state = InteractionState {
            id,
            channel_id,
            sent_at,
            acknowledged: false,
            original: None,
            follow_ups: Vec::new(),
            bucket: Vec::new(),
        };
        lock(&self.shared.interactions).insert(token.clone(), state);
        SentInteraction { id, token, sent_at }
    }

    /// Makes the REST side know an interaction that was acknowledged elsewhere: by the HTTP
    /// response of an interactions endpoint, which Discord itself receives (not this fake's REST).
    pub fn register_acknowledged_interaction(&self, channel_id: u64) -> SentInteraction {
        let sent = self.register_interaction(channel_id);
        if let Some(state) = lock(&self.shared.interactions).get_mut(&sent.token) {
            state.acknowledged = true;
        }
        sent
    }

    /// Dispatches MESSAGE_CREATE in the guild (see [`message_create_payload`]); returns the
    /// message id.
    pub async fn send_message(
        &self,
        channel_id: u64,
        author_id: u64,
        author_bot: bool,
        content: &str,
        mentions_bot: bool,
    ) -> u64 {
        let sessions = self.sessions("MESSAGE_CREATE", GUILD_ID).await;
        let id = self.shared.snowflake();
        let d =
            message_create_payload(id, channel_id, author_id, author_bot, content, mentions_bot);
        let t = "MESSAGE_CREATE";
        for session in sessions {
            session
                .send(Outgoing::Dispatch { t, d: d.clone() })
                .expect("gateway connection closed");
        }
        id
    }

    /// Dispatches `/zunda` that another process of the bot has acknowledged already: the bot's
    /// own callback gets 400 / 40060.
    pub async fn send_interaction_taken_elsewhere(
        &self,
        channel_id: u64,
        question: &str,
    ) -> SentInteraction {
        let sessions = self.sessions("INTERACTION_CREATE", GUILD_ID).await;
        let sent = self.register_acknowledged_interaction(channel_id);
        let d = interaction_payload(sent.id, &sent.token, channel_id, 42, "user", question);
        for session in sessions {
            let _ = session.send(Outgoing::Dispatch {
                t: "INTERACTION_CREATE",
                d: d.clone(),
            });
        }
        sent
    }

    /// Dispatches a command without options (e.g. `zunda-reset`) from a member whose channel
    /// permissions are `permissions` (Discord's bit set).
    pub async fn send_command(
        &self,
        channel_id: u64,
        user_id: u64,
        name: &str,
        permissions: u64,
    ) -> SentInteraction {
        let sessions = self.sessions("INTERACTION_CREATE", GUILD_ID).await;
        let sent = self.register_interaction(channel_id);
        let mut d = interaction_payload(sent.id, &sent.token, channel_id, user_id, "member", "");
        d["data"]["name"] = json!(name);
        d["data"]["id"] = json!(self.shared.snowflake().to_string());
        d["data"]["options"] = json!([]);
        d["member"]["permissions"] = json!(permissions.to_string());
        for session in sessions {
            let _ = session.send(Outgoing::Dispatch {
                t: "INTERACTION_CREATE",
                d: d.clone(),
            });
        }
        sent
    }

    /// Dispatches any gateway event (`t`, `d`) to the guild's sessions.
    pub async fn dispatch(&self, t: &'static str, d: Value) {
        for session in self.sessions(t, GUILD_ID).await {
            let _ = session.send(Outgoing::Dispatch { t, d: d.clone() });
        }
    }

    /// Serves `bytes` as an attachment (like Discord's CDN); returns its URL.
    pub fn serve_file(&self, name: &str, content_type: &str, bytes: Vec<u8>) -> String {
        lock(&self.shared.files).insert(name.to_owned(), (content_type.to_owned(), bytes));
        format!("{}/attachments/{name}", self.base_url())
    }

    /// Makes `GET /channels/{id}` describe channel `id` with `parent`.
    pub fn set_channel(&self, id: u64, parent: Option<u64>) {
        lock(&self.shared.channels).insert(id, parent);
    }

    /// Rate-limits each interaction token's webhook routes to `requests` per `window`.
    pub fn limit_webhooks(&self, requests: usize, window: Duration) {
        *lock(&self.shared.webhook_bucket) = Some((requests, window));
    }

    /// What an interaction shows now: the original response's content, then each follow-up's.
    pub fn shown(&self, token: &str) -> Vec<String> {
        self.messages(token)
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// An interaction's messages as Discord keeps them: the original response, then each
    /// follow-up (with its `attachments`).
    pub fn messages(&self, token: &str) -> Vec<Value> {
        let interactions = lock(&self.shared.interactions);
        let Some(state) = interactions.get(token) else {
            return Vec::new();
        };
        state
            .original
            .iter()
            .chain(&state.follow_ups)
            .cloned()
            .collect()
    }

    /// The channel messages created so far (a repeat with the same nonce creates none).
    pub fn created_messages(&self) -> Vec<Value> {
        lock(&self.shared.created).clone()
    }

    /// Every REST request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until `count` recorded requests match `pred` and returns them; at the timeout,
    /// returns whatever matched.
    pub async fn wait_for_requests(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let matched: Vec<_> = self.requests().into_iter().filter(|r| pred(r)).collect();
            if matched.len() >= count || Instant::now() >= deadline {
                return matched;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next `times` requests for `method` on a path containing `path_contains` get `status`.
    /// A 429 carries Discord's body and `Retry-After` / `X-RateLimit-Reset-After` headers
    /// (`retry_after_secs`, default 1 s).
    pub fn fail_next(
        &self,
        method: &str,
        path_contains: &str,
        times: usize,
        status: u16,
        retry_after_secs: Option<f64>,
    ) {
        self.add_rule(
            method,
            path_contains,
            times,
            Action::Fail {
                status,
                retry_after: retry_after_secs,
            },
        );
    }

    /// The next `times` requests for `method` on a path containing `path_contains` take effect
    /// (a follow-up is posted and shown) but are answered with `status`, as when Discord fails
    /// after creating the message. (`fail_next` with a 5xx is the failure that creates nothing.)
    pub fn commit_then_fail_next(
        &self,
        method: &str,
        path_contains: &str,
        times: usize,
        status: u16,
    ) {
        self.add_rule(method, path_contains, times, Action::CommitThenFail(status));
    }

    /// `GET /channels/{id}/messages` answers 403 (Missing Access) while `forbidden`.
    pub fn forbid_channel_reads(&self, forbidden: bool) {
        *lock(&self.shared.channel_reads_forbidden) = forbidden;
    }

    /// The next request for `method` on a path containing `path_contains` takes effect at once
    /// but is answered only after `delay`, like a reply lost in a slow network.
    pub fn delay_next(&self, method: &str, path_contains: &str, delay: Duration) {
        self.add_rule(method, path_contains, 1, Action::Delay(delay));
    }

    fn add_rule(&self, method: &str, fragment: &str, times: usize, action: Action) {
        lock(&self.shared.rules).push(Rule {
            method: method.to_ascii_uppercase(),
            fragment: fragment.to_string(),
            remaining: times,
            action,
        });
    }

    /// Closes the current gateway connection abruptly (TCP close, no close frame), as a network
    /// failure would; the client must reconnect and resume or identify again.
    pub async fn drop_gateway(&self) {
        let connections: Vec<Connection> =
            lock(&self.shared.gateway).connections.drain(..).collect();
        for connection in connections {
            let (done, dropped) = oneshot::channel();
            if connection.tx.send(Outgoing::Drop(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), dropped).await;
            }
        }
    }

    /// Closes every new gateway connection for `outage` (combine with [`drop_gateway`] to
    /// simulate Discord being unreachable for a while).
    ///
    /// [`drop_gateway`]: Self::drop_gateway
    pub fn refuse_gateway_for(&self, outage: Duration) {
        *lock(&self.shared.refuse_until) = Some(Instant::now() + outage);
    }

    /// How many IDENTIFYs the gateway has received.
    pub fn identify_count(&self) -> usize {
        lock(&self.shared.gateway).identifies
    }

    /// How many RESUMEs the gateway has received.
    pub fn resume_count(&self) -> usize {
        lock(&self.shared.gateway).resumes
    }

    /// How many heartbeats the gateway has acknowledged.
    pub fn heartbeat_count(&self) -> usize {
        lock(&self.shared.gateway).heartbeats
    }

    /// The `d` of the last IDENTIFY (intents, shard, properties…).
    pub fn last_identify(&self) -> Option<Value> {
        lock(&self.shared.gateway).last_identify.clone()
    }

    /// The commands registered so far, global and in guilds (a bulk overwrite replaces its
    /// route's set: the global commands, or one guild's).
    pub fn commands(&self) -> Vec<Value> {
        lock(&self.shared.commands).clone()
    }

    /// The global commands (`guild_id` null) registered so far.
    pub fn global_commands(&self) -> Vec<Value> {
        let commands = lock(&self.shared.commands);
        commands
            .iter()
            .filter(|c| c["guild_id"].is_null())
            .cloned()
            .collect()
    }
}

/// The bot user, as in READY and `GET /users/@me`.
pub fn bot_user_json() -> Value {
    let mut user = user_json(BOT_USER_ID, BOT_USER_NAME, true);
    user["discriminator"] = json!("1234");
    user["verified"] = json!(true);
    user["mfa_enabled"] = json!(false);
    user
}

/// A user object with every field Discord sends.
pub fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": name, "discriminator": "0", "global_name": name,
        "avatar": null, "bot": bot, "system": false, "public_flags": 0, "flags": 0})
}

/// The READY payload for a new session.
pub fn ready_payload(session_id: &str, resume_url: &str) -> Value {
    json!({"v": 10, "user": bot_user_json(), "private_channels": [],
        "guilds": [{"id": GUILD_ID.to_string(), "unavailable": true}],
        "session_id": session_id, "session_type": "normal", "resume_gateway_url": resume_url,
        "shard": [0, 1], "application": {"id": APP_ID.to_string(), "flags": 0}})
}

/// An INTERACTION_CREATE payload for `/zunda question:<question>` used in a guild text channel.
pub fn interaction_payload(
    id: u64,
    token: &str,
    channel_id: u64,
    user_id: u64,
    user_name: &str,
    question: &str,
) -> Value {
    let (app, guild, channel) = (
        APP_ID.to_string(),
        GUILD_ID.to_string(),
        channel_id.to_string(),
    );
    json!({
        "id": id.to_string(), "application_id": app, "type": 2, "token": token, "version": 1,
        "data": {"id": COMMAND_ID.to_string(), "name": "zunda", "type": 1, "guild_id": guild,
            "options": [{"name": "question", "type": 3, "value": question}]},
        "guild_id": guild, "channel_id": channel,
        "channel": {"id": channel, "type": 0, "name": "general", "guild_id": guild,
            "permissions": "2248473465835073"},
        "member": {"user": user_json(user_id, user_name, false), "roles": [],
            "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false,
            "flags": 0, "pending": false, "nick": null, "avatar": null,
            "permissions": "2248473465835073", "communication_disabled_until": null},
        "app_permissions": "2248473465835073", "locale": "ja", "guild_locale": "ja",
        "entitlements": [], "authorizing_integration_owners": {"0": guild}, "context": 0,
        "attachment_size_limit": 26_214_400u64,
    })
}

/// A MESSAGE_CREATE payload for a guild message. With `mentions_bot`, `mentions` lists the bot
/// and the content is prefixed with `<@BOT_USER_ID> ` unless it already mentions it.
pub fn message_create_payload(
    id: u64,
    channel_id: u64,
    author_id: u64,
    author_bot: bool,
    content: &str,
    mentions_bot: bool,
) -> Value {
    let mention = format!("<@{BOT_USER_ID}>");
    let content = if mentions_bot && !content.contains(&mention) {
        format!("{mention} {content}")
    } else {
        content.to_string()
    };
    let author = user_json(author_id, &format!("user{author_id}"), author_bot);
    let mut message = message_json(id, channel_id, author, &content);
    message["guild_id"] = json!(GUILD_ID.to_string());
    message["member"] = json!({"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "deaf": false, "mute": false, "flags": 0, "pending": false});
    if mentions_bot {
        message["mentions"] = json!([bot_user_json()]);
    }
    message
}

/// A message object with every field serenity requires.
pub fn message_json(id: u64, channel_id: u64, author: Value, content: &str) -> Value {
    json!({"id": id.to_string(), "channel_id": channel_id.to_string(), "author": author,
        "content": content, "timestamp": now_rfc3339(), "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "components": [], "pinned": false, "type": 0, "flags": 0})
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

// ---------------------------------------------------------------- REST

type Reply = (u16, Vec<(&'static str, String)>, Value);

fn error(status: u16, code: u64, message: &str) -> Reply {
    (status, vec![], json!({"message": message, "code": code}))
}

async fn serve_rest(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle_rest(Arc::clone(&shared), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle_rest(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let bytes = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let content_type = headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let (body, files) = match multipart::parse(&content_type, &bytes) {
        Some(parsed) => parsed,
        None => (
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Vec::new(),
        ),
    };

    let (mut delay, mut failure, mut commit_failure) = (None, None, None);
    {
        let mut rules = lock(&shared.rules);
        for rule in rules.iter_mut() {
            let matches = rule.method == method && path.contains(&rule.fragment);
            if !matches || rule.remaining == 0 {
                continue;
            }
            match rule.action {
                Action::Delay(d) if delay.is_none() => delay = Some(d),
                Action::Fail {
                    status,
                    retry_after,
                } if failure.is_none() => failure = Some((status, retry_after)),
                Action::CommitThenFail(status) if commit_failure.is_none() => {
                    commit_failure = Some(status)
                }
                _ => continue,
            }
            rule.remaining -= 1;
        }
        rules.retain(|rule| rule.remaining > 0);
    }
    let (status, extra_headers, reply) = match failure {
        Some((429, retry_after)) => {
            let secs = retry_after.unwrap_or(1.0);
            let headers = vec![
                ("retry-after", format!("{}", secs.ceil() as u64)),
                ("x-ratelimit-reset-after", format!("{secs:.3}")),
                ("x-ratelimit-scope", "user".to_string()),
            ];
            let body = json!({"message": "You are being rate limited.", "retry_after": secs,
                "global": false});
            (429, headers, body)
        }
        Some((status, _)) => error(status, 0, &format!("{status}: injected failure")),
        None => {
            let request = (method.as_str(), path.as_str(), query.as_str());
            let reply = route(&shared, request, &headers, (&body, &files), at);
            match commit_failure {
                Some(status) => error(status, 0, &format!("{status}: injected failure")),
                None => reply,
            }
        }
    };

    lock(&shared.requests).push(RecordedRequest {
        at,
        method,
        path,
        query,
        body,
        headers,
        status,
        files,
    });
    // A delayed answer has already taken effect, like a Discord reply lost in a slow network.
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut response = Response::builder().status(status);
    if !extra_headers
        .iter()
        .any(|(name, _)| *name == "content-type")
    {
        response = response.header("content-type", "application/json");
    }
    for (name, value) in extra_headers {
        response = response.header(name, value);
    }
    let payload = if status == 204 {
        Bytes::new()
    } else if let Some(raw) = reply.get("__raw_base64").and_then(Value::as_str) {
        use base64::Engine as _;
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .expect("raw bodies are base64"),
        )
    } else {
        Bytes::from(reply.to_string())
    };
    Ok(response
        .body(Full::new(payload))
        .expect("valid response parts"))
}

fn route(
    shared: &Shared,
    (method, path, query): (&str, &str, &str),
    headers: &[(String, String)],
    (body, files): (&Value, &[RecordedFile]),
    at: Instant,
) -> Reply {
    if let Some(name) = path.strip_prefix("/attachments/") {
        return match lock(&shared.files).get(name) {
            Some((content_type, bytes)) => (
                200,
                vec![("content-type", content_type.clone())],
                json!({"__raw_base64": encode_base64(bytes)}),
            ),
            None => error(404, 0, "404: Not Found"),
        };
    }
    let Some(rest) = path.strip_prefix("/api/v10/") else {
        return error(404, 0, "404: Not Found");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let app = APP_ID.to_string();
    let ok = |value: Value| (200, vec![], value);
    match (method, segments.as_slice()) {
        ("GET", ["gateway"]) => ok(json!({"url": shared.ws_url})),
        ("GET", ["gateway", "bot"]) => ok(json!({"url": shared.ws_url, "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000,
                "max_concurrency": 1}})),
        ("GET", ["users", "@me"]) => ok(bot_user_json()),
        ("GET", ["oauth2", "applications", "@me"]) => ok(json!({"id": app, "name": BOT_USER_NAME,
            "icon": null, "description": "", "bot_public": false, "bot_require_code_grant": false,
            "owner": user_json(1, "owner", false), "verify_key": "00".repeat(32), "team": null,
            "flags": 0})),
        (_, ["applications", a, rest @ ..]) if *a == app => commands(shared, method, rest, body),
        ("POST", ["interactions", id, token, "callback"]) => callback(shared, id, token, body, at),
        (_, ["webhooks", a, token, rest @ ..]) if *a == app => {
            webhook(shared, method, token, rest, (body, files))
        }
        ("GET", ["channels", channel]) => {
            let id: u64 = channel.parse().unwrap_or(0);
            match lock(&shared.channels).get(&id) {
                Some(parent) => ok(json!({"id": id.to_string(), "type": 0,
                    "guild_id": GUILD_ID.to_string(), "name": "channel",
                    "parent_id": parent.map(|p| p.to_string())})),
                None => error(404, 10003, "Unknown Channel"),
            }
        }
        ("GET", ["channels", channel, "messages"]) => {
            let authorized = headers
                .iter()
                .any(|(n, v)| n == "authorization" && v.starts_with("Bot "));
            if !authorized {
                return error(401, 0, "401: Unauthorized");
            }
            if *lock(&shared.channel_reads_forbidden) {
                return error(403, 50001, "Missing Access");
            }
            ok(channel_messages(
                shared,
                channel.parse().unwrap_or(0),
                query,
            ))
        }
        ("POST", ["channels", channel, "messages"]) => {
            let authorized = headers
                .iter()
                .any(|(n, v)| n == "authorization" && v.starts_with("Bot "));
            if !authorized {
                return error(401, 0, "401: Unauthorized");
            }
            let channel = channel.parse().unwrap_or(0);
            let content = body["content"].as_str().unwrap_or_default();
            if let Some(invalid) = invalid_content(content) {
                return invalid;
            }
            // Like Discord: a second create with the same nonce in the channel returns the
            // first message instead of posting another.
            let nonce = body["nonce"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| body["nonce"].as_u64().map(|n| n.to_string()))
                .filter(|_| body["enforce_nonce"] == json!(true));
            if let Some(nonce) = &nonce {
                if nonce.len() > 25 {
                    return error(400, 50035, "Invalid Form Body (nonce)");
                }
                if let Some(first) = lock(&shared.nonces).get(&(channel, nonce.clone())) {
                    return ok(first.clone());
                }
            }
            let mut message = message_json(shared.snowflake(), channel, bot_user_json(), content);
            if let Some(reference) = body.get("message_reference") {
                message["type"] = json!(19);
                message["message_reference"] = reference.clone();
            }
            if let Some(nonce) = nonce {
                message["nonce"] = json!(nonce);
                lock(&shared.nonces).insert((channel, nonce), message.clone());
            }
            lock(&shared.created).push(message.clone());
            ok(message)
        }
        _ => error(404, 0, "404: Not Found"),
    }
}

/// A channel's messages as `GET /channels/{id}/messages?after=&before=&limit=` lists them: newest
/// first; with `after`, the `limit` oldest after it. Interaction responses and follow-ups carry
/// `interaction_metadata` naming their interaction.
fn channel_messages(shared: &Shared, channel: u64, query: &str) -> Value {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse::<u64>().ok())
    };
    let id_of = |message: &Value| {
        message["id"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut messages: Vec<Value> = lock(&shared.created)
        .iter()
        .filter(|m| m["channel_id"].as_str() == Some(channel.to_string().as_str()))
        .cloned()
        .collect();
    for state in lock(&shared.interactions).values() {
        if state.channel_id != channel {
            continue;
        }
        for message in state.original.iter().chain(&state.follow_ups) {
            let mut message = message.clone();
            message["interaction_metadata"] = json!({"id": state.id.to_string(), "type": 2,
                "user": user_json(1, "asker", false), "authorizing_integration_owners": {}});
            messages.push(message);
        }
    }
    messages.sort_by_key(id_of);
    let limit = param("limit").unwrap_or(50).clamp(1, 100) as usize;
    if let Some(after) = param("after") {
        messages.retain(|m| id_of(m) > after);
        messages.truncate(limit);
    } else {
        if let Some(before) = param("before") {
            messages.retain(|m| id_of(m) < before);
        }
        let skip = messages.len().saturating_sub(limit);
        messages.drain(..skip);
    }
    messages.reverse();
    json!(messages)
}

/// `/applications/{app}/commands` and `/applications/{app}/guilds/{guild}/commands`.
fn commands(shared: &Shared, method: &str, rest: &[&str], body: &Value) -> Reply {
    let guild = match rest {
        ["commands"] => None,
        ["guilds", guild, "commands"] => Some(guild.to_string()),
        _ => return error(404, 0, "404: Not Found"),
    };
    let complete = |command: &Value| {
        let mut command = command.clone();
        let name = command["name"].as_str().unwrap_or_default();
        let id = if name == "zunda" {
            COMMAND_ID
        } else {
            shared.snowflake()
        };
        command["id"] = json!(id.to_string());
        command["application_id"] = json!(APP_ID.to_string());
        command["guild_id"] = json!(guild);
        command["version"] = json!(shared.snowflake().to_string());
        for (field, default) in [
            ("type", json!(1)),
            ("description", json!("")),
            ("nsfw", json!(false)),
        ] {
            if command.get(field).map_or(true, Value::is_null) {
                command[field] = default;
            }
        }
        command
    };
    let mut stored = lock(&shared.commands);
    // Global commands and each guild's are separate sets; a bulk overwrite replaces one set.
    let scope = json!(guild);
    let in_scope = |stored: &[Value]| -> Vec<Value> {
        stored
            .iter()
            .filter(|c| c["guild_id"] == scope)
            .cloned()
            .collect()
    };
    match method {
        "GET" => (200, vec![], json!(in_scope(&stored))),
        "PUT" => {
            let Some(list) = body.as_array() else {
                return error(400, 50035, "Invalid Form Body");
            };
            stored.retain(|c| c["guild_id"] != scope);
            stored.extend(list.iter().map(complete));
            (200, vec![], json!(in_scope(&stored)))
        }
        "POST" if body["name"].is_string() => {
            let command = complete(body);
            stored.retain(|c| c["name"] != command["name"] || c["guild_id"] != scope);
            stored.push(command.clone());
            (201, vec![], command)
        }
        _ => error(400, 50035, "Invalid Form Body"),
    }
}

fn callback(shared: &Shared, id: &str, token: &str, body: &Value, at: Instant) -> Reply {
    let mut interactions = lock(&shared.interactions);
    let Some(state) = interactions
        .get_mut(token)
        .filter(|s| s.id.to_string() == id && at.duration_since(s.sent_at) <= ACK_WINDOW)
    else {
        return error(404, 10062, "Unknown interaction");
    };
    if state.acknowledged {
        return error(400, 40060, "Interaction has already been acknowledged.");
    }
    match body["type"].as_u64() {
        Some(4) => {
            let content = body["data"]["content"].as_str().unwrap_or_default();
            if let Some(invalid) = invalid_content(content) {
                return invalid;
            }
            let id = shared.snowflake();
            state.original = Some(message_json(id, state.channel_id, bot_user_json(), content));
        }
        Some(5) => {}
        // An autocomplete answer: the choices, at most 25.
        Some(8)
            if body["data"]["choices"]
                .as_array()
                .is_some_and(|c| c.len() <= 25) => {}
        _ => return error(400, 50035, "Invalid Form Body"),
    }
    state.acknowledged = true;
    (204, vec![], Value::Null)
}

/// Webhook routes of an interaction token: edit/get the original response, post, edit and delete
/// follow-ups.
fn webhook(
    shared: &Shared,
    method: &str,
    token: &str,
    rest: &[&str],
    (body, files): (&Value, &[RecordedFile]),
) -> Reply {
    let bucket = *lock(&shared.webhook_bucket);
    let mut interactions = lock(&shared.interactions);
    let Some(state) = interactions.get_mut(token).filter(|s| s.acknowledged) else {
        return error(404, 10015, "Unknown Webhook");
    };
    let mut limit_headers = vec![];
    if let Some((limit, window)) = bucket {
        let now = Instant::now();
        state.bucket.retain(|at| now.duration_since(*at) < window);
        let reset_after = state.bucket.first().map_or(window, |oldest| {
            window.saturating_sub(now.duration_since(*oldest))
        });
        if state.bucket.len() >= limit {
            let secs = reset_after.as_secs_f64();
            return (
                429,
                vec![
                    ("retry-after", format!("{secs:.3}")),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset-after", format!("{secs:.3}")),
                ],
                json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}),
            );
        }
        state.bucket.push(now);
        limit_headers = vec![
            ("x-ratelimit-limit", limit.to_string()),
            (
                "x-ratelimit-remaining",
                (limit - state.bucket.len()).to_string(),
            ),
            (
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_after.as_secs_f64()),
            ),
        ];
    }
    let content = body["content"].as_str().unwrap_or_default();
    let message = |id: u64| {
        let mut message = message_json(id, state.channel_id, bot_user_json(), content);
        message["webhook_id"] = json!(APP_ID.to_string());
        message["application_id"] = json!(APP_ID.to_string());
        message["attachments"] = attachments(shared, files);
        message
    };
    let (status, reply) = match (method, rest) {
        ("GET", ["messages", "@original"]) => match &state.original {
            Some(original) => (200, original.clone()),
            None => return error(404, 10008, "Unknown Message"),
        },
        ("PATCH", ["messages", "@original"]) => {
            if let Some(invalid) = invalid_content(content) {
                return invalid;
            }
            let message = message(shared.snowflake());
            state.original = Some(message.clone());
            (200, message)
        }
        ("POST", []) => {
            if let Some(invalid) = invalid_content(content) {
                return invalid;
            }
            let message = message(shared.snowflake());
            state.follow_ups.push(message.clone());
            (200, message)
        }
        ("PATCH", ["messages", id]) => {
            if let Some(invalid) = invalid_content(content) {
                return invalid;
            }
            let Some(index) = state.follow_ups.iter().position(|m| m["id"] == *id) else {
                return error(404, 10008, "Unknown Message");
            };
            let id = id.parse().unwrap_or(0);
            let kept = state.follow_ups[index]["attachments"].clone();
            state.follow_ups[index] = message(id);
            // Like Discord: an edit without files or an `attachments` list keeps the old ones.
            if files.is_empty() && body.get("attachments").is_none() {
                state.follow_ups[index]["attachments"] = kept;
            }
            (200, state.follow_ups[index].clone())
        }
        ("DELETE", ["messages", id]) => {
            let Some(index) = state.follow_ups.iter().position(|m| m["id"] == *id) else {
                return error(404, 10008, "Unknown Message");
            };
            state.follow_ups.remove(index);
            (204, Value::Null)
        }
        _ => return error(404, 0, "404: Not Found"),
    };
    (status, limit_headers, reply)
}

/// The attachment objects of a message posted with `files` (the fake keeps each file's text in
/// `content`, which Discord does not send).
fn attachments(shared: &Shared, files: &[RecordedFile]) -> Value {
    json!(files
        .iter()
        .map(
            |file| json!({"id": shared.snowflake().to_string(), "filename": file.filename,
            "content_type": file.content_type, "size": file.content.len(),
            "url": format!("https://cdn.example/attachments/{}", file.filename),
            "content": file.text()})
        )
        .collect::<Vec<_>>())
}

fn invalid_content(content: &str) -> Option<Reply> {
    if content.trim().is_empty() {
        Some(error(400, 50006, "Cannot send an empty message"))
    } else if content.encode_utf16().count() > 2000 {
        Some(error(
            400,
            50035,
            "Invalid Form Body (content: Must be 2000 or fewer in length.)",
        ))
    } else {
        None
    }
}

// ---------------------------------------------------------------- gateway

async fn serve_gateway(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        if lock(&shared.refuse_until).is_some_and(|until| Instant::now() < until) {
            drop(stream);
            continue;
        }
        // Without this, Nagle's algorithm holds small frames back until the bot's delayed ACK
        // (~40 ms on Linux): a stall of the fake, not of the bot.
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
    }
}

async fn send_json(ws: &mut WebSocketStream<TcpStream>, value: Value) -> bool {
    ws.send(Message::Text(value.to_string())).await.is_ok()
}

/// The next sequence number of `connection`'s session.
fn next_seq(shared: &Shared, connection: u64) -> u64 {
    let mut gateway = lock(&shared.gateway);
    match gateway.connections.iter_mut().find(|c| c.id == connection) {
        Some(c) => {
            c.seq += 1;
            c.seq
        }
        None => 0,
    }
}

async fn send_dispatch(
    ws: &mut WebSocketStream<TcpStream>,
    shared: &Shared,
    connection: u64,
    t: &str,
    d: Value,
) -> bool {
    let seq = next_seq(shared, connection);
    send_json(ws, json!({"op": 0, "t": t, "s": seq, "d": d})).await
}

/// Writes every dispatch of `batch`, then flushes once.
async fn send_batch(
    ws: &mut WebSocketStream<TcpStream>,
    shared: &Shared,
    connection: u64,
    batch: Vec<(&'static str, Value)>,
) -> bool {
    for (t, d) in batch {
        let seq = next_seq(shared, connection);
        let frame = json!({"op": 0, "t": t, "s": seq, "d": d});
        if ws.feed(Message::Text(frame.to_string())).await.is_err() {
            return false;
        }
    }
    ws.flush().await.is_ok()
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut gateway = lock(&shared.gateway);
        gateway.next_connection += 1;
        let id = gateway.next_connection;
        gateway.connections.push(Connection {
            id,
            tx,
            ready: false,
            shard: None,
            seq: 0,
        });
        id
    };
    let interval = u64::try_from(shared.heartbeat.as_millis()).unwrap_or(u64::MAX);
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
    let mut alive = send_json(&mut ws, hello).await;

    while alive {
        tokio::select! {
            frame = ws.next() => {
                alive = match frame {
                    Some(Ok(Message::Text(text))) => on_client_frame(&mut ws, &shared, id, &text).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
                    Some(Ok(_)) => true,
                };
            }
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Dispatch { t, d }) => alive = send_dispatch(&mut ws, &shared, id, t, d).await,
                Some(Outgoing::Batch(batch)) => alive = send_batch(&mut ws, &shared, id, batch).await,
                Some(Outgoing::Drop(done)) => {
                    drop(ws);
                    let _ = done.send(());
                    return;
                }
                None => alive = false,
            },
        }
    }
    lock(&shared.gateway).connections.retain(|c| c.id != id);
}

/// Handles one client payload; returns whether the connection stays open.
async fn on_client_frame(
    ws: &mut WebSocketStream<TcpStream>,
    shared: &Shared,
    connection: u64,
    text: &str,
) -> bool {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return false; // Discord closes with 4002 (decode error)
    };
    let d = payload["d"].clone();
    match payload["op"].as_u64() {
        Some(1) => {
            lock(&shared.gateway).heartbeats += 1;
            send_json(ws, json!({"op": 11, "s": null, "t": null, "d": null})).await
        }
        Some(2) => {
            let session_id = format!("session{}", shared.snowflake());
            {
                let mut gateway = lock(&shared.gateway);
                gateway.identifies += 1;
                let shard = d["shard"]
                    .as_array()
                    .and_then(|pair| Some((pair.first()?.as_u64()?, pair.get(1)?.as_u64()?)));
                gateway.last_identify = Some(d);
                gateway.sessions.push(session_id.clone());
                if let Some(current) = gateway.connections.iter_mut().find(|c| c.id == connection) {
                    current.seq = 0;
                    current.shard = shard;
                }
                mark_ready(&mut gateway, connection);
            }
            let ready = ready_payload(&session_id, &shared.ws_url);
            send_dispatch(ws, shared, connection, "READY", ready).await
        }
        Some(6) => {
            let resumable = {
                let mut gateway = lock(&shared.gateway);
                gateway.resumes += 1;
                let known = d["session_id"]
                    .as_str()
                    .is_some_and(|id| gateway.sessions.iter().any(|s| s == id));
                if known {
                    mark_ready(&mut gateway, connection);
                }
                known
            };
            if resumable {
                send_dispatch(ws, shared, connection, "RESUMED", json!({})).await
            } else {
                send_json(ws, json!({"op": 9, "s": null, "t": null, "d": false})).await
            }
        }
        _ => true, // presence updates, member requests…: accepted, ignored
    }
}

fn mark_ready(gateway: &mut Gateway, connection: u64) {
    if let Some(current) = gateway.connections.iter_mut().find(|c| c.id == connection) {
        current.ready = true;
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
