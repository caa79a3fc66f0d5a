//! Asking from anywhere, end to end: the built binary against the loopback fakes, asked in a DM
//! (no guild, no member, `context` 1), refused there when DMs are off (admins excepted),
//! registered for user installs (`ZUNDA_INSTALL=guild+user`), and an answer longer than five
//! messages delivered as four parts and a note carrying the whole answer as a `.txt` file.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_discord::{
    user_json, FakeDiscord, RecordedRequest, SentInteraction, APP_ID, COMMAND_ID, GUILD_ID,
};
use support::fake_openai::{window_of, Step};
use support::world::{is_follow_up, wait_until, World, USER};
use tokio::time::Instant;
use zundamon::discord::deliver::Delivery;
use zundamon::discord::follow_ups::Origin;
use zundamon::discord::live::Shown;
use zundamon::discord::{lay_out_answer, Reply};

const DMS_REFUSED: &str =
    "ごめんなのだ。ダイレクトメッセージでは、ずんだもんに質問できないことになっているのだ。";
const GUILD_CHANNEL: u64 = 7_200_000_000_000_000_001;
const DM_CHANNEL: u64 = 7_200_000_000_000_000_002;
const OTHER_DM_CHANNEL: u64 = 7_200_000_000_000_000_003;
const ADMIN: u64 = 7_200_000_000_000_000_900;

/// An INTERACTION_CREATE for `command` used in the DM `channel` with the bot, as Discord sends it:
/// `user` at the top level, no `guild_id` or `member`, `context` 1, a channel of type 1.
fn dm_payload(
    sent: &SentInteraction,
    channel: u64,
    user: u64,
    command: &str,
    options: Value,
) -> Value {
    json!({
        "id": sent.id.to_string(), "application_id": APP_ID.to_string(), "type": 2,
        "token": sent.token, "version": 1,
        "data": {"id": COMMAND_ID.to_string(), "name": command, "type": 1, "options": options},
        "channel_id": channel.to_string(),
        "channel": {"id": channel.to_string(), "type": 1, "last_message_id": null,
            "flags": 0, "recipients": [user_json(user, "dm-user", false)]},
        "user": user_json(user, "dm-user", false),
        "app_permissions": "559623605571137", "locale": "ja", "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD_ID.to_string(), "1": user.to_string()},
        "context": 1, "attachment_size_limit": 10_485_760u64,
    })
}

/// Sends `/zunda question:<question>` in a DM.
async fn ask_in_dm(world: &World, channel: u64, user: u64, question: &str) -> SentInteraction {
    let sent = world.discord.register_interaction(channel);
    let options = json!([{"name": "question", "type": 3, "value": question}]);
    let d = dm_payload(&sent, channel, user, "zunda", options);
    world.discord.dispatch("INTERACTION_CREATE", d).await;
    sent
}

/// Asks in a DM and waits for the final answer; returns what it shows.
async fn answered_in_dm(world: &World, channel: u64, user: u64, question: &str) -> String {
    let sent = ask_in_dm(world, channel, user, question).await;
    world.wait_final(&sent).await;
    world.discord.shown(&sent.token).concat()
}

#[tokio::test]
async fn a_dm_is_answered_with_its_own_window() {
    let world = World::start("anywhere-dm", &[("ZUNDA_STREAM", "false")]).await;
    let guild = world.ask(GUILD_CHANNEL, "ギルドでの秘密の質問").await;
    assert!(guild.contains("ギルドでの秘密の質問"), "{guild}");

    let first = answered_in_dm(&world, DM_CHANNEL, USER, "DMでの最初の質問").await;
    assert!(first.starts_with("> DMでの最初の質問\n"), "{first}");
    assert!(
        first.contains("「DMでの最初の質問」の答えなのだ"),
        "{first}"
    );
    let second = answered_in_dm(&world, DM_CHANNEL, USER, "DMでの二番目の質問").await;
    assert!(second.contains("二番目"), "{second}");

    let asked = world.model_requests_for("DMでの二番目の質問");
    assert_eq!(
        asked.len(),
        1,
        "one model request for the second DM question"
    );
    let window = window_of(&asked[0]).concat();
    assert!(window.contains("DMでの最初の質問"), "{window}");
    assert!(
        !window.contains("ギルド"),
        "the guild's exchange leaked: {window}"
    );
    let messages = asked[0]["messages"].to_string();
    assert!(
        messages.contains("「DMでの最初の質問」の答えなのだ"),
        "the first DM answer is in the window: {messages}"
    );

    // Another DM (another user's) is another window again.
    let other = answered_in_dm(&world, OTHER_DM_CHANNEL, 42, "別のDMの質問").await;
    assert!(other.contains("別のDMの質問"), "{other}");
    let window = window_of(&world.model_requests_for("別のDMの質問")[0]).concat();
    assert!(
        !window.contains("DMでの") && !window.contains("ギルド"),
        "{window}"
    );

    // /zunda-memory works in a DM: it reports the DM's window, only to the asker.
    let sent = world.discord.register_interaction(DM_CHANNEL);
    let d = dm_payload(&sent, DM_CHANNEL, USER, "zunda-memory", json!([]));
    world.discord.dispatch("INTERACTION_CREATE", d).await;
    let reply = world
        .wait_taken_callback(&sent, Duration::from_secs(10))
        .await
        .body;
    assert_eq!(reply["type"], 4, "{reply}");
    assert_eq!(reply["data"]["flags"], 64, "{reply}");
    let text = reply["data"]["content"].as_str().unwrap_or_default();
    assert!(text.contains('2') && text.contains("のだ"), "{text}");
}

#[tokio::test]
async fn dms_can_be_refused_except_for_admins() {
    let config = format!("[access]\nadmins = [\"{ADMIN}\"]\n");
    let world = World::builder("anywhere-no-dms")
        .config(&config)
        .envs(&[("ZUNDA_STREAM", "false"), ("ZUNDA_ALLOW_DMS", "false")])
        .start()
        .await;

    let refused = ask_in_dm(&world, DM_CHANNEL, USER, "DMで断られる質問").await;
    let reply = world
        .wait_taken_callback(&refused, Duration::from_secs(10))
        .await
        .body;
    assert_eq!(reply["type"], 4, "an immediate reply: {reply}");
    assert_eq!(
        reply["data"]["flags"], 64,
        "only the asker sees it: {reply}"
    );
    assert_eq!(reply["data"]["content"], DMS_REFUSED);
    assert_eq!(reply["data"]["allowed_mentions"], json!({"parse": []}));

    let admin = answered_in_dm(&world, DM_CHANNEL, ADMIN, "管理者のDMの質問").await;
    assert!(
        admin.contains("「管理者のDMの質問」の答えなのだ"),
        "{admin}"
    );
    // In a guild, DMs being off changes nothing.
    let guild = world.ask(GUILD_CHANNEL, "ギルドの質問").await;
    assert!(guild.contains("「ギルドの質問」の答えなのだ"), "{guild}");

    assert!(
        world.model_requests_for("DMで断られる質問").is_empty(),
        "a refusal costs no model call"
    );
    assert_eq!(
        world
            .bot
            .metric("zundamon_questions_refused_total{reason=\"dms\"}")
            .await,
        Some(1.0)
    );
}

/// Checks `command` against Discord's documented application command schema; returns the
/// problems found.
fn schema_problems(command: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let name = command["name"].as_str().unwrap_or_default();
    let name_ok = (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c == '-' || c == '_' || c.is_alphanumeric())
        && name.to_lowercase() == name;
    if !name_ok {
        problems.push(format!("name {name:?}"));
    }
    let description = command["description"].as_str().unwrap_or_default();
    if !(1..=100).contains(&description.chars().count()) {
        problems.push(format!("description of {name} is {description:?}"));
    }
    let options = command["options"].as_array().cloned().unwrap_or_default();
    if options.len() > 25 {
        problems.push(format!("{name} has {} options", options.len()));
    }
    for option in &options {
        let kind = option["type"].as_u64().unwrap_or(0);
        if !(1..=11).contains(&kind) {
            problems.push(format!("{name}: option type {kind}"));
        }
        let option_name = option["name"].as_str().unwrap_or_default();
        if !(1..=32).contains(&option_name.chars().count())
            || option_name.to_lowercase() != option_name
        {
            problems.push(format!("{name}: option name {option_name:?}"));
        }
        let option_description = option["description"].as_str().unwrap_or_default();
        if !(1..=100).contains(&option_description.chars().count()) {
            problems.push(format!("{name}: option description {option_description:?}"));
        }
        if let Some(max) = option.get("max_length").filter(|v| !v.is_null()) {
            if kind != 3 || !(1..=6000).contains(&max.as_u64().unwrap_or(0)) {
                problems.push(format!("{name}: max_length {max}"));
            }
        }
    }
    let subset = |field: &str, allowed: &[u64]| match command.get(field) {
        None | Some(Value::Null) => true,
        Some(Value::Array(values)) => values
            .iter()
            .all(|v| v.as_u64().is_some_and(|v| allowed.contains(&v))),
        Some(_) => false,
    };
    if !subset("contexts", &[0, 1, 2]) {
        problems.push(format!("{name}: contexts {}", command["contexts"]));
    }
    if !subset("integration_types", &[0, 1]) {
        problems.push(format!(
            "{name}: integration_types {}",
            command["integration_types"]
        ));
    }
    match command.get("default_member_permissions") {
        None | Some(Value::Null) => {}
        Some(Value::String(bits))
            if !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) => {}
        Some(other) => problems.push(format!("{name}: default_member_permissions {other}")),
    }
    if command.get("contexts").is_some_and(|c| !c.is_null())
        && command.get("dm_permission").is_some()
    {
        problems.push(format!("{name}: dm_permission beside contexts"));
    }
    problems
}

#[tokio::test]
async fn a_user_install_registers_global_commands_for_every_context() {
    let world = World::start("anywhere-install", &[("ZUNDA_INSTALL", "guild+user")]).await;
    let command_puts = || -> Vec<_> {
        world
            .discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
            .collect()
    };
    wait_until(
        "the commands to be registered",
        Duration::from_secs(10),
        || command_puts().len() >= 2,
    )
    .await;
    let puts = command_puts();
    let global = format!("/applications/{APP_ID}/commands");
    let guild = format!("/applications/{APP_ID}/guilds/{GUILD_ID}/commands");
    assert_eq!(puts.len(), 2, "{puts:#?}");
    assert!(
        puts[0].path.ends_with(&global),
        "one global bulk overwrite first"
    );
    assert!(
        puts[1].path.ends_with(&guild),
        "then the guild's: {}",
        puts[1].path
    );
    assert_eq!(
        puts[1].body,
        json!([]),
        "the guild's own commands are cleared"
    );

    let sent = puts[0].body.as_array().unwrap();
    let names: Vec<&str> = sent.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["zunda", "zunda-reset", "zunda-memory", "zunda-model"]
    );
    for command in sent {
        let (types, contexts) = match command["name"].as_str().unwrap() {
            "zunda" | "zunda-memory" => (json!([0, 1]), json!([0, 1, 2])),
            _ => (json!([0]), json!([0])),
        };
        assert_eq!(command["integration_types"], types, "{command}");
        assert_eq!(command["contexts"], contexts, "{command}");
        let problems = schema_problems(command);
        assert!(problems.is_empty(), "{problems:?} in {command}");
    }
    assert_eq!(sent[1]["default_member_permissions"], "8192");
    assert_eq!(sent[3]["default_member_permissions"], "32");
    assert_eq!(world.discord.global_commands().len(), 4);
    assert_eq!(
        world.discord.commands().len(),
        4,
        "nothing registered twice"
    );
    assert!(
        world.bot.logs().contains("registered /zunda"),
        "the registration is logged"
    );

    // A user-installed /zunda used in a DM is answered.
    let answer = answered_in_dm(&world, DM_CHANNEL, USER, "ユーザーインストールの質問").await;
    assert!(
        answer.contains("「ユーザーインストールの質問」の答えなのだ"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_guild_install_keeps_its_commands_valid() {
    let world = World::start("anywhere-guild-install", &[]).await;
    wait_until(
        "the commands to be registered",
        Duration::from_secs(10),
        || world.discord.commands().len() >= 4,
    )
    .await;
    assert!(world.discord.global_commands().is_empty());
    for command in world.discord.commands() {
        let problems = schema_problems(&command);
        assert!(problems.is_empty(), "{problems:?} in {command}");
        assert!(command.get("contexts").is_none(), "{command}");
    }
}

/// An answer of about 12000 characters, in Zundamon's voice.
fn long_answer() -> String {
    (1..=700)
        .map(|n| format!("ずんだ餅の話、その{n}なのだ。"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asks `question` (the model scripted to answer [`long_answer`]) and checks what the
/// interaction shows: five messages at most, the last one the note with the whole answer as a
/// text file, and nothing that could ping.
/// Returns the methods of the requests that carried the file.
async fn assert_long_answer_comes_as_a_file(world: &World, question: &str) -> Vec<String> {
    let answer = long_answer();
    assert!(answer.chars().count() > 11_000);
    world
        .openai
        .script(question, vec![Step::Answer(answer.clone())]);
    let sent = world
        .discord
        .send_interaction(GUILD_CHANNEL, USER, "ずんだユーザー", question)
        .await;
    world.wait_final(&sent).await;

    let messages = world.discord.messages(&sent.token);
    assert_eq!(
        messages.len(),
        5,
        "the original and four follow-ups: {messages:#?}"
    );
    let follow_up_posts: Vec<_> = world
        .discord
        .requests()
        .into_iter()
        .filter(|r| is_follow_up(r, &sent.token) && r.status < 300)
        .collect();
    assert!(
        follow_up_posts.len() <= 4,
        "{} follow-ups posted",
        follow_up_posts.len()
    );

    let quoted = format!("> {question}\n{answer}");
    let shown: String = messages[..4]
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    // (A split at a line break drops that break.)
    let flat = |text: &str| text.replace('\n', "");
    assert!(
        flat(&quoted).starts_with(&flat(&shown)),
        "the first parts are the answer's beginning: {shown}"
    );
    assert!(shown.chars().count() > 7000, "four messages' worth shown");
    for message in &messages[..4] {
        assert_eq!(message["attachments"], json!([]), "{message}");
    }
    let last = &messages[4];
    let note = last["content"].as_str().unwrap();
    assert!(note.contains("ファイル") && note.contains("のだ"), "{note}");
    let files = last["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 1, "exactly one file: {files:?}");
    assert_eq!(files[0]["filename"], "zundamon-answer.txt");
    assert_eq!(files[0]["content_type"], "text/plain; charset=utf-8");
    assert_eq!(
        files[0]["content"].as_str().unwrap(),
        answer,
        "the whole answer"
    );

    // The file went in a multipart request whose payload disables mentions, like every message.
    let deliveries = world.deliveries(&sent);
    let with_file: Vec<_> = deliveries.iter().filter(|r| !r.files.is_empty()).collect();
    assert!(!with_file.is_empty());
    for request in &deliveries {
        if request.method == "DELETE" {
            continue;
        }
        assert_eq!(
            request.body["allowed_mentions"],
            json!({"parse": []}),
            "{} {}",
            request.method,
            request.path
        );
    }
    let methods = with_file.iter().map(|r| r.method.clone()).collect();
    for request in with_file {
        assert_eq!(request.files.len(), 1);
        assert_eq!(request.files[0].field, "files[0]");
        assert_eq!(
            request.body["attachments"],
            json!([{"id": 0, "filename": "zundamon-answer.txt"}])
        );
    }
    // Not cut with the old notice.
    assert!(!messages.iter().any(|m| m["content"]
        .as_str()
        .unwrap()
        .contains("ここまでにしておくのだ")));
    methods
}

#[tokio::test]
async fn an_answer_longer_than_five_messages_comes_as_a_file() {
    let world = World::start("anywhere-long", &[("ZUNDA_STREAM", "false")]).await;
    let methods = assert_long_answer_comes_as_a_file(&world, "とても長い答えの質問").await;
    assert_eq!(methods, ["POST"], "the note posted once, with its file");
}

#[tokio::test]
async fn a_streamed_answer_longer_than_five_messages_ends_as_a_file() {
    let world = World::start(
        "anywhere-long-stream",
        &[("ZUNDA_STREAM", "true"), ("ZUNDA_STREAM_EDIT_MS", "250")],
    )
    .await;
    // Slow enough for the live view to fill all five messages before the answer ends.
    world.openai.set_stream_gap(Duration::from_millis(2));
    let methods = assert_long_answer_comes_as_a_file(&world, "流れてくる長い答えの質問").await;
    // The live view had shown streamed text in the fifth message: the final delivery edits it
    // into the note, attaching the file, instead of posting another message.
    assert_eq!(methods, ["PATCH"], "the live view's fifth message edited");
}

/// The final delivery of `reply` over `shown`, part by part, as the bot runs it.
async fn deliver(delivery: &Delivery, sent: &SentInteraction, shown: &mut Shown, reply: &Reply) {
    let deliver_by = Instant::now() + Duration::from_secs(600);
    if let Some(file) = &reply.file {
        shown.attach(reply.parts.len() - 1, file.clone());
    }
    for (index, part) in reply.parts.iter().enumerate() {
        shown
            .finish_part(delivery, &sent.token, index, part, deliver_by)
            .await
            .expect("part delivered");
    }
}

/// The requests that carried a file for `sent`.
fn file_requests(fake: &FakeDiscord, sent: &SentInteraction) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.contains(&sent.token) && !r.files.is_empty())
        .collect()
}

/// What the interaction's last message carries.
fn last_files(fake: &FakeDiscord, sent: &SentInteraction) -> Vec<Value> {
    let messages = fake.messages(&sent.token);
    assert_eq!(messages.len(), 5, "{messages:#?}");
    messages[4]["attachments"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_file_is_never_shown_twice_when_a_delivery_is_resumed_or_its_post_is_lost() {
    let fake = FakeDiscord::start().await;
    let delivery = Delivery::new(&fake.base_url(), APP_ID, Duration::from_secs(5))
        .reading_channels_as("Bot dG9rZW4");
    let reply = lay_out_answer("長い質問", &long_answer());
    assert_eq!(reply.parts.len(), 5);

    // A process delivered everything, then died before noting the parts delivered: the next
    // one starts again with the follow-up ids noted as they were posted.
    let sent = fake.register_interaction(GUILD_CHANNEL);
    delivery.defer(sent.id, &sent.token).await.unwrap();
    deliver(&delivery, &sent, &mut Shown::new(None, Vec::new()), &reply).await;
    let ids: Vec<u64> = fake.messages(&sent.token)[1..]
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    deliver(&delivery, &sent, &mut Shown::new(None, ids), &reply).await;
    let files = last_files(&fake, &sent);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["content"], long_answer());
    let methods: Vec<String> = file_requests(&fake, &sent)
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(
        methods,
        ["POST", "PATCH"],
        "posted once, then edited in place"
    );

    // The post of the note took effect but its answer was lost: the message is looked for and
    // kept, not posted again.
    let sent = fake.register_interaction(GUILD_CHANNEL);
    delivery.defer(sent.id, &sent.token).await.unwrap();
    let mut shown = Shown::new(None, Vec::new());
    shown.set_origin(Origin {
        interaction_id: sent.id,
        channel_id: GUILD_CHANNEL,
    });
    let first_four = Reply {
        parts: reply.parts[..4].to_vec(),
        file: None,
    };
    deliver(&delivery, &sent, &mut shown, &first_four).await;
    fake.commit_then_fail_next("POST", &sent.token, 1, 502);
    deliver(&delivery, &sent, &mut shown, &reply).await;
    let files = last_files(&fake, &sent);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(file_requests(&fake, &sent).len(), 1, "never posted again");
    let notes = fake
        .shown(&sent.token)
        .iter()
        .filter(|text| text.as_str() == reply.parts[4])
        .count();
    assert_eq!(notes, 1);
}
