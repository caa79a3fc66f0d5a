//! Gateway shard ranges: two bot processes share one bot on the fake gateway, each running half
//! of its shards; each answers only the guilds of its own shards. And `ZUNDA_COMMAND_SCOPE=global`.

mod support;

use std::time::Duration;

use support::bot::run_once;
use support::fake_discord::SentInteraction;
use support::world::World;

/// A guild id on shard `shard` of `total` (Discord: `(guild_id >> 22) % total`).
fn guild_on(shard: u64, total: u64, n: u64) -> u64 {
    ((1_000_000 + n * total + shard) << 22) | 777
}

#[tokio::test]
async fn two_processes_with_two_shard_ranges_each_answer_only_their_guilds() {
    // The world's own process runs shard 1 (the one of the fake's default guild, which it
    // waits to be served).
    let world = World::builder("shards")
        .envs(&[("ZUNDA_SHARD_TOTAL", "2"), ("ZUNDA_SHARD_RANGE", "1-1")])
        .start()
        .await;
    let low = world
        .second_process("shard-0-0.db", &[("ZUNDA_SHARD_RANGE", "0-0")])
        .await;
    let (discord, openai, high) = (&world.discord, &world.openai, &world.bot);
    assert!(
        discord.wait_sessions(2, Duration::from_secs(20)).await,
        "both shards identify; logs:\n{}\n---\n{}",
        low.logs(),
        high.logs()
    );

    // Three guilds on each shard, two questions in each, interleaved.
    let mut sent: Vec<(u64, SentInteraction)> = Vec::new();
    for n in 0..3 {
        for shard in [0, 1] {
            let guild = guild_on(shard, 2, n);
            for q in 0..2 {
                let channel = guild + 1 + q; // any channel of that guild
                let question = format!("シャード{shard}のギルド{n}の質問{q}なのだ");
                let interaction = discord
                    .send_guild_interaction(guild, channel, &question)
                    .await;
                sent.push((shard, interaction));
            }
        }
    }
    for (shard, interaction) in &sent {
        let token = interaction.token.clone();
        let edits = discord
            .wait_for_requests(
                |r| r.method == "PATCH" && r.path.contains(&token),
                1,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(
            edits.len(),
            1,
            "interaction on shard {shard} answered once; logs:\n{}\n---\n{}",
            low.logs(),
            high.logs()
        );
    }
    // Exactly one acknowledgement and one model request per question: nobody answered twice.
    // Each process logs the end of each of its interactions; nothing follows for it.
    for (shard, interaction) in &sent {
        let process = if *shard == 0 { &low } else { high };
        process.wait_final(interaction.id).await;
    }
    for (_, interaction) in &sent {
        let callbacks = discord
            .requests()
            .into_iter()
            .filter(|r| r.is("POST", &format!("/interactions/{}/", interaction.id)))
            .count();
        assert_eq!(callbacks, 1, "interaction {}", interaction.id);
    }
    assert_eq!(openai.request_count(), sent.len());

    // Each process handled exactly the interactions of its shard (its log names them).
    let (low_log, high_log) = (low.logs(), high.logs());
    for (shard, interaction) in &sent {
        let id = format!("interaction_id={}", interaction.id);
        let (mine, other) = if *shard == 0 {
            (&low_log, &high_log)
        } else {
            (&high_log, &low_log)
        };
        assert!(mine.contains(&id), "shard {shard} process handled {id}");
        assert!(!other.contains(&id), "the other process never saw {id}");
    }

    // Only the shard-0 process registered /zunda.
    let registrations = discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
        .count();
    assert_eq!(registrations, 1);
    low.assert_no_secrets_logged();
    high.assert_no_secrets_logged();
}

#[tokio::test]
async fn global_scope_registers_the_command_for_every_guild_without_a_guild_id() {
    let world = World::start(
        "global-scope",
        &[("ZUNDA_COMMAND_SCOPE", "global"), ("DISCORD_GUILD_ID", "0")],
    )
    .await;
    let (discord, bot) = (&world.discord, &world.bot);
    let puts = discord
        .wait_for_requests(
            |r| r.method == "PUT" && r.path.ends_with("/commands"),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(puts.len(), 1, "{}", bot.logs());
    assert!(
        !puts[0].path.contains("/guilds/"),
        "global: {}",
        puts[0].path
    );
}

#[test]
fn a_shard_range_outside_the_total_is_a_clear_startup_error() {
    let (code, _, err) = run_once(
        &["check-config"],
        &[
            ("DISCORD_BOT_TOKEN", "t"),
            ("DISCORD_GUILD_ID", "1"),
            ("OPENAI_API_KEY", "k"),
            ("ZUNDA_SHARD_TOTAL", "2"),
            ("ZUNDA_SHARD_RANGE", "1-2"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ZUNDA_SHARD_RANGE=\"1-2\" is outside ZUNDA_SHARD_TOTAL=2"),
        "{err}"
    );
}
