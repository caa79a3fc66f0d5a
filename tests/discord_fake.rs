//! Proves the fake Discord is real enough: serenity 0.12.5 connects to it, registers a guild
//! command, receives an interaction and a mention, acknowledges with a deferred response and
//! resumes after a dropped connection. Then drives the bot's own `Delivery` client against it:
//! 429s are waited out, 5xx retried with backoff, other 4xx never retried, deadlines honoured, and
//! every body disables mentions.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serenity::all::{
    ClientBuilder, CommandOptionType, Context, CreateCommand, CreateCommandOption,
    CreateInteractionResponse, CreateInteractionResponseMessage, EventHandler, GatewayIntents,
    GuildId, HttpBuilder, Interaction, Message, Ready,
};
use serenity::model::event::{Event, GatewayEvent};
use support::fake_discord::{
    interaction_payload, message_create_payload, message_json, ready_payload, user_json,
    FakeDiscord, RecordedRequest, APP_ID, BOT_USER_ID, COMMAND_ID, GUILD_ID,
};
use zundamon::discord::deliver::{Delivery, DeliveryError, Route};

const CHANNEL: u64 = 1_180_000_000_000_000_300;
const USER: u64 = 1_180_000_000_000_000_400;

fn install_crypto() {
    // Already installed by another test in this binary: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What the handler saw.
#[derive(Default)]
struct Seen {
    ready: usize,
    /// (command name, `question` value, whether the deferred response succeeded)
    interactions: Vec<(String, String, bool)>,
    /// (content, whether the bot is among the mentions)
    messages: Vec<(String, bool)>,
}

struct Recorder(Arc<Mutex<Seen>>);

#[serenity::async_trait]
impl EventHandler for Recorder {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        assert_eq!(ready.user.id.get(), BOT_USER_ID);
        self.0.lock().unwrap().ready += 1;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Command(command) = interaction else {
            return;
        };
        let question = command
            .data
            .options
            .iter()
            .find(|option| option.name == "question")
            .and_then(|option| option.value.as_str())
            .unwrap_or_default()
            .to_string();
        let defer = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new());
        let deferred = command.create_response(&ctx.http, defer).await.is_ok();
        let name = command.data.name.clone();
        self.0
            .lock()
            .unwrap()
            .interactions
            .push((name, question, deferred));
    }

    async fn message(&self, _ctx: Context, message: Message) {
        let mentions_bot = message.mentions.iter().any(|u| u.id.get() == BOT_USER_ID);
        self.0
            .lock()
            .unwrap()
            .messages
            .push((message.content, mentions_bot));
    }
}

async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn serenity_works_against_the_fake() {
    install_crypto();
    let fake = FakeDiscord::start_with_heartbeat(Duration::from_millis(300)).await;
    let http = HttpBuilder::new("fake-token")
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .build();
    let intents = GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut client = ClientBuilder::new_with_http(http, intents)
        .event_handler(Recorder(Arc::clone(&seen)))
        .await
        .expect("client builds");
    let http = Arc::clone(&client.http);
    let shards = Arc::clone(&client.shard_manager);
    let running = tokio::spawn(async move { client.start().await });

    // Gateway URL from REST, then HELLO → IDENTIFY → READY.
    assert!(fake.wait_ready(Duration::from_secs(10)).await, "no session");
    eventually("ready", Duration::from_secs(5), || {
        seen.lock().unwrap().ready == 1
    })
    .await;
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.is("GET", "/api/v10/gateway")));
    let identify = fake.last_identify().expect("identified");
    assert_eq!(identify["intents"], json!(intents.bits()));
    assert_eq!(identify["token"], "Bot fake-token");

    // Guild command registration (bulk overwrite).
    let question =
        CreateCommandOption::new(CommandOptionType::String, "question", "質問").required(true);
    let zunda = CreateCommand::new("zunda")
        .description("ずんだもんに質問することができます。")
        .add_option(question);
    let commands = GuildId::new(GUILD_ID)
        .set_commands(&http, vec![zunda])
        .await
        .expect("guild commands registered");
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].id.get(), COMMAND_ID);
    assert_eq!(commands[0].options[0].name, "question");
    let path = format!("/api/v10/applications/{APP_ID}/guilds/{GUILD_ID}/commands");
    let put = fake.requests().into_iter().find(|r| r.is("PUT", &path));
    assert_eq!(put.expect("PUT recorded").body[0]["name"], "zunda");

    // An interaction reaches the handler, whose deferral gets a 204.
    let first = fake
        .send_interaction(CHANNEL, USER, "tester", "ずんだ餅って何？")
        .await;
    eventually("first interaction", Duration::from_secs(5), || {
        seen.lock().unwrap().interactions.len() == 1
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().interactions[0],
        ("zunda".into(), "ずんだ餅って何？".into(), true)
    );
    let callback = format!("/interactions/{}/{}/callback", first.id, first.token);
    let acks = fake
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", &callback));
    let acks: Vec<RecordedRequest> = acks.collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0].status, acks[0].body["type"].clone()),
        (204, json!(5))
    );
    assert!(acks[0].at.duration_since(first.sent_at) < Duration::from_secs(3));

    // A mention arrives with its content (no MESSAGE_CONTENT intent needed for mentions).
    fake.send_message(CHANNEL, USER, false, "こんにちは", true)
        .await;
    eventually("mention", Duration::from_secs(5), || {
        !seen.lock().unwrap().messages.is_empty()
    })
    .await;
    let (content, mentions_bot) = seen.lock().unwrap().messages[0].clone();
    assert_eq!(content, format!("<@{BOT_USER_ID}> こんにちは"));
    assert!(mentions_bot);

    // A dropped connection is resumed, and interactions flow again.
    eventually("a heartbeat", Duration::from_secs(5), || {
        fake.heartbeat_count() >= 2
    })
    .await;
    fake.drop_gateway().await;
    assert!(
        fake.wait_ready(Duration::from_secs(15)).await,
        "no reconnect"
    );
    assert_eq!((fake.identify_count(), fake.resume_count()), (1, 1));
    fake.send_interaction(CHANNEL, USER, "tester", "二回目なのだ")
        .await;
    eventually("second interaction", Duration::from_secs(5), || {
        seen.lock().unwrap().interactions.len() == 2
    })
    .await;
    assert_eq!(seen.lock().unwrap().interactions[1].1, "二回目なのだ");
    assert!(seen.lock().unwrap().interactions[1].2);
    assert_eq!(seen.lock().unwrap().ready, 1, "resumed, not re-identified");

    shards.shutdown_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
}

/// serenity silently drops events it cannot deserialize; check each payload against its types.
#[test]
fn payloads_deserialize_into_serenity_types() {
    let dispatch = |t: &str, d: Value| -> Event {
        let frame = json!({"op": 0, "s": 1, "t": t, "d": d});
        match serde_json::from_value::<GatewayEvent>(frame).expect("gateway frame") {
            GatewayEvent::Dispatch(1, event) => event,
            other => panic!("not a dispatch: {other:?}"),
        }
    };

    let ready = ready_payload("session", "ws://127.0.0.1:1");
    serde_json::from_value::<Ready>(ready.clone()).expect("READY");
    assert!(matches!(dispatch("READY", ready), Event::Ready(_)));

    let payload = interaction_payload(7, "tok", CHANNEL, USER, "tester", "質問");
    let interaction = serde_json::from_value::<Interaction>(payload.clone()).expect("interaction");
    let command = interaction.command().expect("a command interaction");
    assert_eq!(command.user.id.get(), USER, "user copied from member");
    assert_eq!(command.guild_id, Some(GuildId::new(GUILD_ID)));
    assert_eq!(command.data.options[0].value.as_str(), Some("質問"));
    assert!(matches!(
        dispatch("INTERACTION_CREATE", payload),
        Event::InteractionCreate(_)
    ));

    let payload = message_create_payload(8, CHANNEL, USER, false, "hi", true);
    let message = serde_json::from_value::<Message>(payload.clone()).expect("message");
    assert_eq!(message.mentions[0].id.get(), BOT_USER_ID);
    assert!(matches!(
        dispatch("MESSAGE_CREATE", payload),
        Event::MessageCreate(_)
    ));
    assert!(matches!(dispatch("RESUMED", json!({})), Event::Resumed(_)));

    let reply = message_json(
        9,
        CHANNEL,
        user_json(BOT_USER_ID, "zundamon", true),
        "answer",
    );
    serde_json::from_value::<Message>(reply).expect("REST message");
}

// ------------------------------------------------------------ the bot's Delivery client

fn far_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

fn matching(fake: &FakeDiscord, method: &str, fragment: &str) -> Vec<RecordedRequest> {
    let mut found: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is(method, fragment))
        .collect();
    found.sort_by_key(|r| r.at);
    found
}

fn statuses(requests: &[RecordedRequest]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

async fn deferred_interaction(fake: &FakeDiscord, delivery: &Delivery) -> String {
    let interaction = fake.register_interaction(CHANNEL);
    delivery
        .defer(interaction.id, &interaction.token)
        .await
        .expect("deferred");
    interaction.token
}

#[tokio::test]
async fn delivery_waits_out_a_rate_limit() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    let token = deferred_interaction(&fake, &delivery).await;
    let defer = matching(&fake, "POST", "/callback");
    assert_eq!(defer[0].body["type"], 5);
    assert_eq!(
        defer[0].body["data"]["allowed_mentions"],
        json!({"parse": []})
    );

    fake.fail_next("PATCH", "@original", 1, 429, Some(1.0));
    delivery
        .edit_original(&token, "@everyone ずんだ餅はおいしいのだ", far_deadline())
        .await
        .expect("edited after the rate limit");

    let edits = matching(&fake, "PATCH", "/messages/@original");
    assert_eq!(statuses(&edits), [429, 200]);
    let waited = edits[1].at.duration_since(edits[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "retried after {waited:?}");
    assert_eq!(edits[1].body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(edits[1].body["content"], "@everyone ずんだ餅はおいしいのだ");
    let agent = edits[1].header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("DiscordBot ("), "{agent}");
}

#[tokio::test]
async fn delivery_retries_server_errors_with_backoff() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    let token = deferred_interaction(&fake, &delivery).await;

    fake.fail_next("PATCH", "/messages/@original", 2, 500, None);
    let parts = vec!["一つ目なのだ".to_string(), "二つ目なのだ".to_string()];
    delivery
        .deliver(&token, &parts, far_deadline())
        .await
        .expect("delivered despite two 500s");

    let edits = matching(&fake, "PATCH", "/messages/@original");
    assert_eq!(statuses(&edits), [500, 500, 200]);
    let first_wait = edits[1].at.duration_since(edits[0].at);
    let second_wait = edits[2].at.duration_since(edits[1].at);
    assert!(first_wait >= Duration::from_millis(450), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(950), "{second_wait:?}");
    for request in &edits {
        assert_eq!(request.body["content"], "一つ目なのだ");
        assert_eq!(request.body["allowed_mentions"], json!({"parse": []}));
    }
    let webhook = format!("/webhooks/{APP_ID}/{token}");
    let follow_ups = matching(&fake, "POST", &webhook);
    assert_eq!(statuses(&follow_ups), [200]);
    assert!(follow_ups[0].at > edits[2].at, "parts in order");
}

/// A follow-up answered with a server error may have been posted (Discord offers no idempotency
/// key for webhooks): it is not sent again blindly; the caller is told its outcome is unknown.
#[tokio::test]
async fn a_follow_up_answered_with_a_server_error_is_not_posted_again() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    let token = deferred_interaction(&fake, &delivery).await;

    let webhook = format!("/webhooks/{APP_ID}/{token}");
    fake.commit_then_fail_next("POST", &webhook, 1, 500);
    let parts = vec!["一つ目なのだ".to_string(), "二つ目なのだ".to_string()];
    let err = delivery
        .deliver(&token, &parts, far_deadline())
        .await
        .expect_err("the follow-up's outcome is unknown");
    assert!(
        matches!(err, DeliveryError::Unknown { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(500));
    assert!(err.is_final(), "retrying later could post it twice");
    assert_eq!(statuses(&matching(&fake, "POST", &webhook)), [500]);
    assert_eq!(fake.shown(&token), parts, "shown once");

    // A 429 creates nothing: still retried.
    fake.fail_next("POST", &webhook, 1, 429, Some(0.2));
    delivery
        .follow_up(&token, "三つ目なのだ", far_deadline())
        .await
        .expect("retried after the rate limit");
    assert_eq!(
        statuses(&matching(&fake, "POST", &webhook)),
        [500, 429, 200]
    );
}

#[tokio::test]
async fn delivery_does_not_retry_a_client_error() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    let token = deferred_interaction(&fake, &delivery).await;

    fake.fail_next("PATCH", "@original", 1, 400, None);
    let err = delivery
        .edit_original(&token, "だめなのだ", far_deadline())
        .await
        .expect_err("a 400 fails");
    assert!(matches!(
        err,
        DeliveryError::Rejected {
            route: Route::EditOriginal,
            status: 400,
            ..
        }
    ));
    assert!(
        !format!("{err} {err:?}").contains(&token),
        "token leaked: {err}"
    );
    assert_eq!(matching(&fake, "PATCH", "@original").len(), 1);

    // An unknown token is Discord's 10015, also final.
    let err = delivery
        .follow_up("bm90LWEtdG9rZW4", "誰？", far_deadline())
        .await
        .expect_err("unknown webhook");
    assert_eq!(err.status(), Some(404));
    assert_eq!(matching(&fake, "POST", "/webhooks/").len(), 1);
}

#[tokio::test]
async fn delivery_never_waits_past_its_deadline() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    let token = deferred_interaction(&fake, &delivery).await;

    fake.fail_next("PATCH", "@original", 1, 429, Some(5.0));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let err = delivery
        .edit_original(&token, "間に合わないのだ", deadline)
        .await
        .expect_err("the retry would pass the deadline");
    assert!(started.elapsed() < Duration::from_secs(1), "waited anyway");
    assert!(
        matches!(err, DeliveryError::GaveUp { attempts: 1, .. }),
        "{err}"
    );
    assert_eq!(err.status(), Some(429));
}

#[tokio::test]
async fn acknowledgement_retries_once_within_the_window() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));

    // A 502 on the first try: the quick retry succeeds.
    let interaction = fake.register_interaction(CHANNEL);
    fake.fail_next("POST", "/callback", 1, 502, None);
    delivery
        .defer(interaction.id, &interaction.token)
        .await
        .expect("deferred on the second try");
    let acks = matching(&fake, "POST", &format!("/interactions/{}/", interaction.id));
    assert_eq!(statuses(&acks), [502, 204]);
    assert!(acks[1].at.duration_since(interaction.sent_at) < Duration::from_secs(3));

    // The first try got through but its answer was too slow: the retry's 40060 means success.
    let interaction = fake.register_interaction(CHANNEL);
    fake.delay_next("POST", "/callback", Duration::from_secs(3));
    let started = Instant::now();
    delivery
        .reply_now(interaction.id, &interaction.token, "すぐ答えるのだ")
        .await
        .expect("acknowledged by the first try");
    assert!(started.elapsed() < Duration::from_secs(3));
    let acks = matching(&fake, "POST", &format!("/interactions/{}/", interaction.id));
    assert_eq!(statuses(&acks), [204, 400]);
    assert_eq!(acks[0].body["type"], 4);
    assert_eq!(
        acks[0].body["data"]["allowed_mentions"],
        json!({"parse": []})
    );

    // Two failures: given up, without blowing the 3 s window.
    let interaction = fake.register_interaction(CHANNEL);
    fake.fail_next("POST", "/callback", 2, 500, None);
    let started = Instant::now();
    let err = delivery
        .defer(interaction.id, &interaction.token)
        .await
        .expect_err("two failures");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(err, DeliveryError::GaveUp { attempts: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn channel_reply_is_authorized_and_pings_nobody_else() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5));
    delivery
        .send_channel_message(
            "fake-token",
            CHANNEL,
            "ずんだもんだよ。",
            Some(42),
            Some(42),
        )
        .await
        .expect("sent");
    // Sent again with the same nonce (a retry, or a second process): Discord keeps one message.
    delivery
        .send_channel_message(
            "fake-token",
            CHANNEL,
            "ずんだもんだよ。",
            Some(42),
            Some(42),
        )
        .await
        .expect("sent again");
    let sent = matching(&fake, "POST", &format!("/channels/{CHANNEL}/messages"));
    assert_eq!(statuses(&sent), [200, 200]);
    assert_eq!(sent[0].body["nonce"], "42");
    assert_eq!(sent[0].body["enforce_nonce"], true);
    assert_eq!(sent[0].header("authorization"), Some("Bot fake-token"));
    assert_eq!(
        sent[0].body["allowed_mentions"],
        json!({"parse": [], "replied_user": true})
    );
    assert_eq!(sent[0].body["message_reference"]["message_id"], "42");
}

/// A follow-up whose answer never comes (a timeout after sending) is not sent again either.
#[tokio::test]
async fn a_follow_up_whose_answer_times_out_is_not_posted_again() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_millis(500));
    let token = deferred_interaction(&fake, &delivery).await;
    let webhook = format!("/webhooks/{APP_ID}/{token}");
    fake.delay_next("POST", &webhook, Duration::from_secs(2));
    let err = delivery
        .follow_up(&token, "遅い返事なのだ", far_deadline())
        .await
        .expect_err("the answer was lost");
    assert!(matches!(err, DeliveryError::Unknown { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains(&token));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(matching(&fake, "POST", &webhook).len(), 1);
}
