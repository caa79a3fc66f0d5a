//! End-to-end: a follow-up message is shown once even when Discord's answer to posting it is lost
//! or a server error, and a streamed answer's live view has stopped writing before the final
//! messages go out. The built `zundamon` binary runs against the loopback fakes; assertions are on
//! what the interaction shows and on the fake Discord's request log.

mod support;

use std::time::{Duration, Instant};

use support::fake_discord::{RecordedRequest, SentInteraction, APP_ID};
use support::fake_openai::Step;
use support::world::{World, USER};
use zundamon::discord::split::split_message;
use zundamon::discord::{bound_reply, quote_answer, MESSAGE_LIMIT};

const QUESTION: &str = "長い話をして";

/// An answer that needs a follow-up (two messages).
fn long_answer() -> String {
    "ずんだ餅は枝豆をすりつぶした餡でできているのだ。".repeat(110)
}

fn expected_parts(answer: &str) -> Vec<String> {
    let parts = split_message(&bound_reply(&quote_answer(QUESTION, answer)), MESSAGE_LIMIT);
    assert_eq!(parts.len(), 2);
    parts
}

/// Every follow-up post of `sent` (`POST /webhooks/{app}/{token}`), whatever Discord answered.
fn follow_up_posts(world: &World, sent: &SentInteraction) -> Vec<RecordedRequest> {
    world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&sent.token))
        .collect()
}

fn statuses(requests: &[RecordedRequest]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

/// The bot's reads of `channel`'s messages (looking for a follow-up).
fn channel_reads(world: &World, channel: u64) -> Vec<RecordedRequest> {
    world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.is("GET", &format!("/channels/{channel}/messages")))
        .collect()
}

/// Any follow-up post in this world (the rules below match the first one).
fn any_follow_up() -> String {
    format!("/webhooks/{APP_ID}/")
}

async fn ask_long(world: &World, channel: u64) -> SentInteraction {
    let sent = world
        .discord
        .send_interaction(channel, USER, "user", QUESTION)
        .await;
    world.wait_final(&sent).await;
    // A channel answers in order: once a later (short) question in it is answered, a duplicate
    // of the long answer (a retry behind the delivery's back) would have shown before counting.
    let later = world
        .discord
        .send_interaction(channel, USER, "user", "短い質問なのだ")
        .await;
    world.wait_final(&later).await;
    sent
}

async fn unknown_outcomes(world: &World, outcome: &str) -> Option<f64> {
    world
        .bot
        .metric(&format!(
            "zundamon_followups_unknown_total{{outcome=\"{outcome}\"}}"
        ))
        .await
}

#[tokio::test]
async fn a_follow_up_posted_but_answered_500_is_found_in_the_channel_and_not_posted_again() {
    let world = World::start("followup-committed-500", &[("ZUNDA_STREAM", "false")]).await;
    let answer = long_answer();
    world
        .openai
        .script("長い話", vec![Step::Answer(answer.clone())]);
    world
        .discord
        .commit_then_fail_next("POST", &any_follow_up(), 1, 500);
    let sent = ask_long(&world, 810).await;

    assert_eq!(
        world.discord.shown(&sent.token),
        expected_parts(&answer),
        "log:\n{}",
        world.bot.logs()
    );
    let posts = follow_up_posts(&world, &sent);
    assert_eq!(statuses(&posts), [500], "the follow-up was posted again");
    let reads = channel_reads(&world, 810);
    assert!(!reads.is_empty(), "the channel was never read");
    assert!(reads[0]
        .header("authorization")
        .unwrap()
        .starts_with("Bot "));
    assert!(
        reads[0].query.contains(&format!("after={}", sent.id)),
        "{}",
        reads[0].query
    );
    assert_eq!(unknown_outcomes(&world, "found").await, Some(1.0));
    assert_eq!(unknown_outcomes(&world, "resent").await, Some(0.0));
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_follow_up_answered_500_without_being_posted_is_posted_once_more_after_a_look() {
    let world = World::start("followup-lost-500", &[("ZUNDA_STREAM", "false")]).await;
    let answer = long_answer();
    world
        .openai
        .script("長い話", vec![Step::Answer(answer.clone())]);
    world
        .discord
        .fail_next("POST", &any_follow_up(), 1, 500, None);
    let sent = ask_long(&world, 820).await;

    assert_eq!(
        world.discord.shown(&sent.token),
        expected_parts(&answer),
        "log:\n{}",
        world.bot.logs()
    );
    let posts = follow_up_posts(&world, &sent);
    assert_eq!(statuses(&posts), [500, 200]);
    // Posted again only after the look proved it missing.
    let reads = channel_reads(&world, 820);
    assert!(
        reads
            .iter()
            .any(|r| r.at > posts[0].at && r.at < posts[1].at),
        "posted again without looking first"
    );
    assert_eq!(unknown_outcomes(&world, "resent").await, Some(1.0));
    assert_eq!(unknown_outcomes(&world, "found").await, Some(0.0));
}

/// Where the bot may not read the channel, whether a follow-up exists cannot be told: it is not
/// posted again. A part that had been posted shows once; one that had not stays missing (and is
/// logged and counted) rather than risking showing twice.
#[tokio::test]
async fn a_follow_up_that_cannot_be_looked_for_is_never_posted_twice() {
    let world = World::start("followup-given-up", &[("ZUNDA_STREAM", "false")]).await;
    world.discord.forbid_channel_reads(true);
    let answer = long_answer();
    world.openai.script(
        "長い話",
        vec![Step::Answer(answer.clone()), Step::Answer(answer.clone())],
    );
    let expected = expected_parts(&answer);

    // Posted, answered 500: shown exactly once.
    world
        .discord
        .commit_then_fail_next("POST", &any_follow_up(), 1, 500);
    let posted = ask_long(&world, 830).await;
    assert_eq!(world.discord.shown(&posted.token), expected);
    assert_eq!(statuses(&follow_up_posts(&world, &posted)), [500]);

    // Not posted, answered 500: missing, not retried blindly.
    world
        .discord
        .fail_next("POST", &any_follow_up(), 1, 500, None);
    let lost = ask_long(&world, 831).await;
    assert_eq!(world.discord.shown(&lost.token), expected[..1]);
    assert_eq!(statuses(&follow_up_posts(&world, &lost)), [500]);

    assert_eq!(channel_reads(&world, 830)[0].status, 403);
    assert_eq!(unknown_outcomes(&world, "given_up").await, Some(2.0));
    let logs = world.bot.logs();
    assert_eq!(
        logs.matches("part of the answer may be missing").count(),
        2,
        "{logs}"
    );
}

/// The live view is posting the follow-up when the answer completes, held up by a long rate
/// limit. It is stopped before the final delivery: nothing of it reaches Discord afterwards, and
/// the follow-up it may have posted is looked for rather than posted twice.
#[tokio::test]
async fn a_live_view_stuck_when_the_answer_completes_writes_nothing_after_the_final_messages() {
    let world = World::start("live-view-stopped", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    let answer = long_answer();
    world
        .openai
        .script("長い話", vec![Step::Answer(answer.clone())]);
    // About 900 events 6 ms apart: the follow-up is needed well before the answer completes.
    world.openai.set_stream_gap(Duration::from_millis(6));
    let rate_limit = 35.0;
    world
        .discord
        .fail_next("POST", &any_follow_up(), 1, 429, Some(rate_limit));
    let sent = world
        .discord
        .send_interaction(840, USER, "user", QUESTION)
        .await;
    world.wait_final(&sent).await;
    let delivered = Instant::now();

    let limited = follow_up_posts(&world, &sent);
    assert_eq!(
        statuses(&limited)[..1],
        [429],
        "the view never tried to post the follow-up; log:\n{}",
        world.bot.logs()
    );
    // A view left running would post after its wait: give it that long, and a margin.
    let retry_at = limited[0].at + Duration::from_secs_f64(rate_limit) + Duration::from_secs(2);
    tokio::time::sleep(retry_at.saturating_duration_since(Instant::now())).await;

    let late: Vec<String> = world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&sent.token) && r.at > delivered)
        .map(|r| format!("{} {} → {}", r.method, r.path, r.status))
        .collect();
    assert!(
        late.is_empty(),
        "written after the final messages: {late:?}"
    );
    assert_eq!(world.discord.shown(&sent.token), expected_parts(&answer));
    assert_eq!(
        statuses(&follow_up_posts(&world, &sent)),
        [429, 200],
        "the follow-up was posted twice"
    );
    assert!(world.bot.logs().contains("stopped it"));
}

/// The live view posts the follow-up while the model writes; Discord creates it and answers 500.
/// The view leaves it alone (its id is unknown) and the final delivery finds it in the channel and
/// edits it into the final part instead of posting the part again.
#[tokio::test]
async fn a_follow_up_the_live_view_posted_behind_a_500_is_found_and_edited_into_the_final_part() {
    let world = World::start("live-followup-500", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    let answer = long_answer();
    world
        .openai
        .script("長い話", vec![Step::Answer(answer.clone())]);
    world.openai.set_stream_gap(Duration::from_millis(6));
    world
        .discord
        .commit_then_fail_next("POST", &any_follow_up(), 1, 500);
    let sent = ask_long(&world, 850).await;

    let posts = follow_up_posts(&world, &sent);
    assert_eq!(statuses(&posts), [500], "log:\n{}", world.bot.logs());
    let expected = expected_parts(&answer);
    assert_ne!(
        posts[0].body["content"].as_str(),
        Some(expected[1].as_str()),
        "the view posted the follow-up before the answer was complete"
    );
    assert_eq!(world.discord.shown(&sent.token), expected);
    assert_eq!(unknown_outcomes(&world, "found").await, Some(1.0));
}
