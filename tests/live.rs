//! End-to-end: the channel memory commands (`/zunda-reset`, `/zunda-memory`), against the built
//! binary and the loopback fakes.

mod support;

use std::time::{Duration, Instant};

use support::fake_discord::{RecordedRequest, SentInteraction};
use support::world::{content, World, USER};

const MANAGE_MESSAGES: u64 = 1 << 13;
const SEND_MESSAGES: u64 = 1 << 11;

/// The first callback Discord took for an interaction, waiting up to 5 s.
async fn callback(world: &World, sent: &SentInteraction) -> RecordedRequest {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = world
            .discord
            .requests()
            .into_iter()
            .find(|r| r.is("POST", &format!("/interactions/{}/", sent.id)) && r.status < 300);
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no callback; log:\n{}",
            world.bot.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The user turns the model saw before the current question, for the last model request.
fn last_history(world: &World) -> Vec<String> {
    let last = world.openai.requests().pop().expect("a model request");
    let users: Vec<String> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| support::fake_openai::content_text(&m["content"]))
        .collect();
    users[..users.len() - 1].to_vec()
}

#[tokio::test]
async fn all_commands_are_registered_in_one_bulk_overwrite_with_reset_restricted() {
    let world = World::start("commands", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.discord.commands().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "commands: {:?}",
            world.discord.commands()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let puts: Vec<_> = world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
        .collect();
    assert_eq!(puts.len(), 1, "one bulk overwrite");
    let commands = world.discord.commands();
    let names: Vec<&str> = commands
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zunda", "zunda-reset", "zunda-memory"]);
    assert_eq!(
        commands[1]["default_member_permissions"],
        MANAGE_MESSAGES.to_string()
    );
}

#[tokio::test]
async fn reset_forgets_the_channel_and_is_refused_without_manage_messages() {
    let world = World::start("reset", &[]).await;
    let first = world
        .discord
        .send_interaction(42, USER, "user", "覚えてね")
        .await;
    world.wait_delivered(&first, Duration::from_secs(30)).await;

    // Without the permission: refused, only to the asker, and nothing is forgotten.
    let refused = world
        .discord
        .send_command(42, USER, "zunda-reset", SEND_MESSAGES)
        .await;
    let reply = callback(&world, &refused).await;
    assert_eq!(reply.body["type"], 4);
    assert_eq!(reply.body["data"]["flags"], 64);
    assert!(
        content(&reply).contains("メッセージの管理"),
        "{}",
        content(&reply)
    );
    let second = world
        .discord
        .send_interaction(42, USER, "user", "まだ覚えてる？")
        .await;
    world.wait_delivered(&second, Duration::from_secs(30)).await;
    assert_eq!(
        last_history(&world).len(),
        1,
        "the refused reset forgot something"
    );

    // With it: reset in Zundamon's voice, and the next question has no history.
    let reset = world
        .discord
        .send_command(42, USER, "zunda-reset", MANAGE_MESSAGES)
        .await;
    assert_eq!(callback(&world, &reset).await.body["type"], 5);
    let edit = world.wait_delivered(&reset, Duration::from_secs(10)).await;
    assert!(
        content(&edit[0]).contains("リセットしたのだ"),
        "{}",
        content(&edit[0])
    );
    assert!(content(&edit[0]).contains("2件"));
    let third = world
        .discord
        .send_interaction(42, USER, "user", "はじめまして")
        .await;
    world.wait_delivered(&third, Duration::from_secs(30)).await;
    assert!(
        last_history(&world).is_empty(),
        "history after reset: {:?}",
        last_history(&world)
    );
    // Other channels keep theirs.
    let other = world
        .discord
        .send_interaction(43, USER, "user", "別の部屋")
        .await;
    world.wait_delivered(&other, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_reset_racing_a_question_takes_effect_after_it() {
    let world = World::start("reset-race", &[]).await;
    world.openai.set_delay(Duration::from_millis(800));
    let asked = world
        .discord
        .send_interaction(44, USER, "user", "考え中")
        .await;
    world
        .openai
        .wait_for_requests(1, Duration::from_secs(5))
        .await;
    let reset = world
        .discord
        .send_command(44, USER, "zunda-reset", MANAGE_MESSAGES)
        .await;
    let answer = world.wait_delivered(&asked, Duration::from_secs(30)).await;
    assert!(content(&answer[0]).starts_with("> 考え中\n"));
    let edit = world.wait_delivered(&reset, Duration::from_secs(10)).await;
    assert!(
        content(&edit[0]).contains("1件"),
        "the answered question was forgotten too"
    );
    world.openai.set_delay(Duration::ZERO);
    let next = world.discord.send_interaction(44, USER, "user", "次").await;
    world.wait_delivered(&next, Duration::from_secs(30)).await;
    assert!(last_history(&world).is_empty());
}

#[tokio::test]
async fn memory_shows_privately_what_the_channel_remembers_and_when_it_leaves_ram() {
    let world = World::start("memory", &[("ZUNDA_CHANNEL_IDLE_SECS", "600")]).await;
    let empty = world
        .discord
        .send_command(45, USER, "zunda-memory", SEND_MESSAGES)
        .await;
    let reply = callback(&world, &empty).await;
    assert_eq!(reply.body["data"]["flags"], 64);
    assert!(content(&reply).contains("0件"), "{}", content(&reply));
    for n in 0..2 {
        let sent = world
            .discord
            .send_interaction(45, USER, "user", &format!("質問{n}"))
            .await;
        world.wait_delivered(&sent, Duration::from_secs(30)).await;
    }
    let shown = world
        .discord
        .send_command(45, USER, "zunda-memory", SEND_MESSAGES)
        .await;
    let text = content(&callback(&world, &shown).await);
    assert!(
        text.contains("2件") && text.contains("最大5件") && text.contains("10分"),
        "{text}"
    );
}
