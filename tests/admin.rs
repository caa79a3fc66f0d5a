//! Admins in control, end to end: the built binary against the loopback fakes, configured the way
//! an operator does (`[access]`, `[models.NAME]`, `[[places]]`, `/zunda-model`, the daily token
//! budget), each behaviour in its hardest case.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_discord::{interaction_payload, SentInteraction, GUILD_ID};
use support::fake_openai::FakeOpenAi;
use support::world::{asked_question, wait_until, World, USER};

const ACCESS_REFUSED: &str =
    "ごめんなのだ。ここでは、ずんだもんに質問できないことになっているのだ。";
const BUDGET_SPENT: &str = "今日はもうたくさん答えたのだ。また明日、聞きに来てほしいのだ！";
const MODEL_FORBIDDEN: &str =
    "ごめんなのだ。モデルの切り替えは管理者か「サーバー管理」ができる人だけが使えるのだ。";

const CATEGORY: u64 = 7_100_000_000_000_000_001;
const CHANNEL: u64 = 7_100_000_000_000_000_002;
const THREAD: u64 = 7_100_000_000_000_000_003;
const OTHER_CHANNEL: u64 = 7_100_000_000_000_000_004;
const OTHER_THREAD: u64 = 7_100_000_000_000_000_005;
const ROLE: u64 = 7_100_000_000_000_000_777;
const ADMIN: u64 = 7_100_000_000_000_000_900;
const MEMBER: u64 = 7_100_000_000_000_000_901;

/// Who asks, where, and with what.
struct Ask<'a> {
    channel: u64,
    /// The channel object's parent and type (11: a public thread).
    parent: Option<u64>,
    thread: bool,
    user: u64,
    roles: &'a [u64],
    /// The command and its options (default: `/zunda question:`).
    command: &'a str,
    options: Value,
    /// The member's permissions in the channel.
    permissions: &'a str,
}

impl<'a> Ask<'a> {
    fn question(channel: u64, text: &str) -> Self {
        Ask {
            channel,
            parent: None,
            thread: false,
            user: USER,
            roles: &[],
            command: "zunda",
            options: json!([{"name": "question", "type": 3, "value": text}]),
            permissions: "2248473465835073",
        }
    }

    fn in_thread(mut self, parent: u64) -> Self {
        self.parent = Some(parent);
        self.thread = true;
        self
    }

    fn model(user: u64, channel: u64, name: &str, permissions: &'a str) -> Self {
        Ask {
            command: "zunda-model",
            options: json!([{"name": "model", "type": 3, "value": name}]),
            user,
            permissions,
            ..Ask::question(channel, "")
        }
    }
}

/// Dispatches `ask` on the gateway.
async fn send(world: &World, ask: Ask<'_>) -> SentInteraction {
    let sent = world.discord.register_interaction(ask.channel);
    let mut d = interaction_payload(sent.id, &sent.token, ask.channel, ask.user, "member", "");
    d["data"]["name"] = json!(ask.command);
    d["data"]["options"] = ask.options;
    d["member"]["roles"] = json!(ask
        .roles
        .iter()
        .map(|role| role.to_string())
        .collect::<Vec<_>>());
    d["member"]["permissions"] = json!(ask.permissions);
    d["channel"]["type"] = json!(if ask.thread { 11 } else { 0 });
    if let Some(parent) = ask.parent {
        d["channel"]["parent_id"] = json!(parent.to_string());
    }
    world.discord.dispatch("INTERACTION_CREATE", d).await;
    sent
}

/// A text channel in `category`, as CHANNEL_CREATE describes it.
async fn create_channel(world: &World, channel: u64, category: u64) {
    let d = json!({"id": channel.to_string(), "type": 0, "guild_id": GUILD_ID.to_string(),
        "name": "rust", "position": 1, "permission_overwrites": [], "nsfw": false,
        "parent_id": category.to_string(), "topic": null, "last_message_id": null,
        "rate_limit_per_user": 0});
    world.discord.dispatch("CHANNEL_CREATE", d).await;
}

/// Waits for the callback of `sent` and returns its body.
async fn callback(world: &World, sent: &SentInteraction) -> Value {
    world
        .wait_taken_callback(sent, Duration::from_secs(10))
        .await
        .body
}

/// Asserts `sent` was refused with `text`, only to its user, at once.
async fn assert_refused(world: &World, sent: &SentInteraction, text: &str) {
    let body = callback(world, sent).await;
    assert_eq!(body["type"], 4, "an immediate reply: {body}");
    assert_eq!(body["data"]["flags"], 64, "only the asker sees it: {body}");
    assert_eq!(body["data"]["content"], text);
}

/// Asks and waits for the final answer; returns what it shows.
async fn answered(world: &World, ask: Ask<'_>) -> String {
    let sent = send(world, ask).await;
    world.wait_final(&sent).await;
    world.discord.shown(&sent.token).concat()
}

#[tokio::test]
async fn a_blocked_role_is_refused_at_once_without_a_model_call() {
    let config = format!("[access]\nblocked_roles = [\"{ROLE}\"]\n");
    let world = World::builder("admin-role")
        .config(&config)
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    let refused = send(
        &world,
        Ask {
            roles: &[1, ROLE],
            ..Ask::question(CHANNEL, "ロールで止められる質問")
        },
    )
    .await;
    assert_refused(&world, &refused, ACCESS_REFUSED).await;
    // A member without the role, asked after: answered, and the model never saw the first.
    let shown = answered(&world, Ask::question(CHANNEL, "ロールのない人の質問")).await;
    assert!(shown.contains("ロールのない人の質問"), "{shown}");
    assert_eq!(world.asked(), vec!["ロールのない人の質問".to_owned()]);
    assert_eq!(
        world
            .bot
            .metric("zundamon_questions_refused_total{reason=\"access\"}")
            .await,
        Some(1.0)
    );
    // Nothing of the refused question is remembered.
    assert_eq!(world.stored_answers().len(), 1);
}

#[tokio::test]
async fn a_thread_is_judged_by_its_parent_channel() {
    let config = format!("[access]\nallowed_channels = [{CHANNEL}]\n");
    let world = World::builder("admin-threads")
        .config(&config)
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    let elsewhere = send(
        &world,
        Ask::question(OTHER_THREAD, "よそのスレッド").in_thread(OTHER_CHANNEL),
    )
    .await;
    assert_refused(&world, &elsewhere, ACCESS_REFUSED).await;
    let shown = answered(
        &world,
        Ask::question(THREAD, "許可されたチャンネルのスレッド").in_thread(CHANNEL),
    )
    .await;
    assert!(shown.contains("許可されたチャンネルのスレッド"), "{shown}");
    assert_eq!(
        world.asked(),
        vec!["許可されたチャンネルのスレッド".to_owned()]
    );
    // Discord would not describe the channel (404 here): not asked again for the next question.
    answered(&world, Ask::question(THREAD, "二つ目").in_thread(CHANNEL)).await;
    let lookups = world
        .discord
        .requests()
        .iter()
        .filter(|r| r.is("GET", &format!("/channels/{CHANNEL}")))
        .count();
    assert_eq!(lookups, 1);
}

#[tokio::test]
async fn a_category_persona_reaches_a_thread_of_a_channel_in_it() {
    let config = format!(
        "[[places]]\nid = \"{CATEGORY}\"\npersona = \"カテゴリの追加設定なのだ。\"\n\n\
         [[places]]\nid = {GUILD_ID}\npersona = \"ギルドの設定は上書きされるのだ。\"\n"
    );
    let world = World::builder("admin-persona")
        .config(&config)
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    create_channel(&world, CHANNEL, CATEGORY).await;
    answered(
        &world,
        Ask::question(THREAD, "スレッドの質問").in_thread(CHANNEL),
    )
    .await;
    let system = system_prompt(&world, "スレッドの質問");
    assert!(system.contains("カテゴリの追加設定なのだ。"), "{system}");
    assert!(
        !system.contains("ギルドの設定は上書きされるのだ。"),
        "{system}"
    );
    // Elsewhere in the guild, the guild's addendum applies.
    answered(&world, Ask::question(OTHER_CHANNEL, "よその質問")).await;
    let system = system_prompt(&world, "よその質問");
    assert!(
        system.contains("ギルドの設定は上書きされるのだ。"),
        "{system}"
    );
    assert!(!system.contains("カテゴリの追加設定なのだ。"), "{system}");
}

/// What a command's messages show once they show something.
async fn shown_eventually(world: &World, sent: &SentInteraction) -> String {
    wait_until("the command's reply", Duration::from_secs(10), || {
        !world.discord.shown(&sent.token).concat().is_empty()
    })
    .await;
    world.discord.shown(&sent.token).concat()
}

fn system_prompt(world: &World, question: &str) -> String {
    let requests = world.model_requests_for(question);
    let request = requests.first().expect("the model was asked");
    request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `[models.fast]` on a second fake server, with its key in `FAST_API_KEY`.
fn fast_model(fast: &FakeOpenAi) -> String {
    format!(
        "[models.fast]\nbase_url = \"{}\"\nmodel = \"fast-model\"\napi_key_env = \"FAST_API_KEY\"\n",
        fast.base_url()
    )
}

#[tokio::test]
async fn a_place_model_answers_from_its_own_server_with_its_key_and_without_search() {
    let fast = FakeOpenAi::start().await;
    let config = format!(
        "{}\n[[places]]\nid = \"{CHANNEL}\"\nmodel = \"fast\"\nsearch = false\n",
        fast_model(&fast)
    );
    let world = World::builder("admin-model")
        .config(&config)
        .env("FAST_API_KEY", "fast-secret-key")
        .start()
        .await;
    answered(&world, Ask::question(CHANNEL, "速いモデルへの質問")).await;
    let requests = fast.recorded();
    let request = requests
        .iter()
        .find(|r| asked_question(&r.body).contains("速いモデルへの質問"))
        .expect("the place's model server was asked");
    assert_eq!(request.body["model"], "fast-model");
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer fast-secret-key")
    );
    assert!(
        request.body.get("tools").is_none(),
        "no search offered: {}",
        request.body
    );
    assert!(world.model_requests_for("速いモデルへの質問").is_empty());
    // Another channel keeps the default model, with search.
    answered(&world, Ask::question(OTHER_CHANNEL, "ふつうの質問")).await;
    let default = world.model_requests_for("ふつうの質問");
    assert!(default[0].get("tools").is_some(), "{}", default[0]);
    world.bot.assert_no_secrets_logged();
    assert!(!world.bot.logs().contains("fast-secret-key"));
}

#[tokio::test]
async fn zunda_model_switches_the_channel_survives_a_restart_and_refuses_others() {
    let fast = FakeOpenAi::start().await;
    let config = format!("{}\n[access]\nadmins = [\"{ADMIN}\"]\n", fast_model(&fast));
    let mut world = World::builder("admin-zunda-model")
        .config(&config)
        .env("FAST_API_KEY", "k")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    // A member without Manage Server: refused, only to them.
    let refused = send(&world, Ask::model(MEMBER, CHANNEL, "fast", "0")).await;
    assert_refused(&world, &refused, MODEL_FORBIDDEN).await;
    answered(&world, Ask::question(CHANNEL, "切り替え前")).await;
    assert_eq!(world.asked(), vec!["切り替え前".to_owned()]);
    // An admin (without the permission): switched.
    let chosen = send(&world, Ask::model(ADMIN, CHANNEL, "fast", "0")).await;
    let shown = shown_eventually(&world, &chosen).await;
    assert!(shown.contains("fast"), "{shown}");
    answered(&world, Ask::question(CHANNEL, "切り替え後")).await;
    assert!(fast
        .requests()
        .iter()
        .any(|body| asked_question(body).contains("切り替え後")));
    // The choice is kept in the store.
    world.bot.signal("TERM");
    world.bot.wait_exit(Duration::from_secs(15)).await;
    world.restart(&[]).await;
    answered(&world, Ask::question(CHANNEL, "再起動の後")).await;
    assert!(fast
        .requests()
        .iter()
        .any(|body| asked_question(body).contains("再起動の後")));
    // /zunda-memory says so; `default` removes the choice (Manage Server is enough).
    let memory = send(
        &world,
        Ask {
            command: "zunda-memory",
            options: json!([]),
            ..Ask::question(CHANNEL, "")
        },
    )
    .await;
    let body = callback(&world, &memory).await;
    let text = body["data"]["content"].as_str().unwrap_or_default();
    assert!(
        text.contains("fast") && text.contains("/zunda-model"),
        "{body}"
    );
    let back = send(&world, Ask::model(MEMBER, CHANNEL, "default", "32")).await;
    shown_eventually(&world, &back).await;
    answered(&world, Ask::question(CHANNEL, "戻した後")).await;
    assert!(world.asked().contains(&"戻した後".to_owned()));
}

#[tokio::test]
async fn a_new_block_list_applies_to_the_next_question_after_sighup() {
    let world = World::builder("admin-reload")
        .config("[access]\nblocked_users = []\n")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    answered(&world, Ask::question(CHANNEL, "リロード前")).await;
    let reloads = world.bot.logs().matches("configuration reload").count();
    std::fs::write(
        world.config_file(),
        format!("[access]\nblocked_users = [\"{USER}\"]\n"),
    )
    .unwrap();
    world.bot.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        world.bot.logs().matches("configuration reload").count() > reloads
    })
    .await;
    let refused = send(&world, Ask::question(CHANNEL, "リロード後")).await;
    assert_refused(&world, &refused, ACCESS_REFUSED).await;
    assert_eq!(world.asked(), vec!["リロード前".to_owned()]);
    // A blocked user's mention gets no reply either; a later question from someone else is
    // answered, which shows the mention was handled (and ignored) before it.
    world
        .discord
        .send_message(CHANNEL, USER, false, "ねえ", true)
        .await;
    answered(
        &world,
        Ask {
            user: MEMBER,
            ..Ask::question(CHANNEL, "ほかの人")
        },
    )
    .await;
    assert!(world.discord.created_messages().is_empty());
}

#[tokio::test]
async fn the_daily_token_budget_refuses_the_question_after_the_one_that_crossed_it() {
    let world = World::builder("admin-budget")
        .env("ZUNDA_DAILY_TOKENS_PER_USER", "5")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    let shown = answered(&world, Ask::question(CHANNEL, "予算内の質問")).await;
    assert!(shown.contains("予算内の質問"), "{shown}");
    let refused = send(&world, Ask::question(OTHER_CHANNEL, "予算切れの質問")).await;
    assert_refused(&world, &refused, BUDGET_SPENT).await;
    assert_eq!(world.asked(), vec!["予算内の質問".to_owned()]);
    assert_eq!(
        world
            .bot
            .metric("zundamon_questions_refused_total{reason=\"token_cap\"}")
            .await,
        Some(1.0)
    );
    // Another user still asks.
    answered(
        &world,
        Ask {
            user: MEMBER,
            ..Ask::question(CHANNEL, "別の人の質問")
        },
    )
    .await;
}

/// Signs and posts `payload` to the bot's `POST /interactions`; the response body as JSON.
async fn post_signed(world: &World, payload: &Value) -> Value {
    use support::http_load::{signed, signing_key, unix_now};
    let body = payload.to_string();
    let headers = signed(&signing_key(), unix_now(), &body);
    let (status, text) = world.bot.post("/interactions", &headers, body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn over_http_refusals_are_ephemeral_autocomplete_lists_models_and_a_thread_finds_its_category(
) {
    use support::http_load::{public_key_hex, signing_key};
    let fast = FakeOpenAi::start().await;
    let config = format!(
        "{}\n[access]\nallowed_channels = [\"{CATEGORY}\"]\nblocked_roles = [{ROLE}]\n",
        fast_model(&fast)
    );
    let world = World::builder("admin-http")
        .config(&config)
        .env("FAST_API_KEY", "k")
        .env("ZUNDA_STREAM", "false")
        .env("DISCORD_PUBLIC_KEY", &public_key_hex(&signing_key()))
        .start()
        .await;
    // The thread's channel sits in the allowed category, which only `GET /channels/{id}` says.
    world.discord.set_channel(CHANNEL, Some(CATEGORY));
    let question = |sent: &SentInteraction, text: &str, roles: Vec<String>| {
        let mut d = interaction_payload(sent.id, &sent.token, THREAD, USER, "member", text);
        d["channel"]["type"] = json!(11);
        d["channel"]["parent_id"] = json!(CHANNEL.to_string());
        d["member"]["roles"] = json!(roles);
        d
    };
    let sent = world.discord.register_acknowledged_interaction(THREAD);
    let reply = post_signed(&world, &question(&sent, "HTTPのスレッド", vec![])).await;
    assert_eq!(reply["type"], 4, "{reply}");
    assert_eq!(reply["data"]["content"], "ちょっと待ってね。", "{reply}");
    assert_ne!(reply["data"]["flags"], 64);
    world.wait_final(&sent).await;
    assert_eq!(world.asked(), vec!["HTTPのスレッド".to_owned()]);
    assert!(world
        .discord
        .requests()
        .iter()
        .any(|r| r.is("GET", &format!("/channels/{CHANNEL}"))));
    // A blocked role, over HTTP: refused in the response itself, only to the asker.
    let sent = world.discord.register_acknowledged_interaction(THREAD);
    let reply = post_signed(
        &world,
        &question(&sent, "HTTPで止められる", vec![ROLE.to_string()]),
    )
    .await;
    assert_eq!(reply["type"], 4, "{reply}");
    assert_eq!(reply["data"]["flags"], 64, "{reply}");
    assert_eq!(reply["data"]["content"], ACCESS_REFUSED);
    // Autocomplete of /zunda-model: the names that match what was typed, prefix first.
    let mut autocomplete = interaction_payload(9, "tok", CHANNEL, ADMIN, "admin", "");
    autocomplete["type"] = json!(4);
    autocomplete["data"]["name"] = json!("zunda-model");
    autocomplete["data"]["options"] =
        json!([{"name": "model", "type": 3, "value": "fa", "focused": true}]);
    let reply = post_signed(&world, &autocomplete).await;
    assert_eq!(reply["type"], 8, "{reply}");
    assert_eq!(
        reply["data"]["choices"],
        json!([{"name": "fast", "value": "fast"}, {"name": "default", "value": "default"}])
    );
    assert_eq!(world.asked(), vec!["HTTPのスレッド".to_owned()]);
}

#[tokio::test]
async fn over_the_gateway_an_unknown_channel_is_looked_up_once_before_it_is_judged() {
    let config = format!(
        "[access]\nallowed_channels = [\"{CATEGORY}\"]\n\n\
         [[places]]\nid = {CATEGORY}\npersona = \"カテゴリから調べた設定なのだ。\"\n"
    );
    let world = World::builder("admin-lookup")
        .config(&config)
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    // No channel event told the bot where CHANNEL sits; Discord's REST API does.
    world.discord.set_channel(CHANNEL, Some(CATEGORY));
    for n in 0..2 {
        let text = format!("スレッドの質問{n}");
        answered(&world, Ask::question(THREAD, &text).in_thread(CHANNEL)).await;
        let system = system_prompt(&world, &text);
        assert!(
            system.contains("カテゴリから調べた設定なのだ。"),
            "{system}"
        );
    }
    let lookups = world
        .discord
        .requests()
        .iter()
        .filter(|r| r.is("GET", &format!("/channels/{CHANNEL}")))
        .count();
    assert_eq!(lookups, 1, "looked up once, then remembered");
    // A thread of a channel outside the category is refused.
    world.discord.set_channel(OTHER_CHANNEL, None);
    let refused = send(
        &world,
        Ask::question(OTHER_THREAD, "外のスレッド").in_thread(OTHER_CHANNEL),
    )
    .await;
    assert_refused(&world, &refused, ACCESS_REFUSED).await;
}
