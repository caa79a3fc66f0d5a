//! The PostgreSQL store from outside: `zundamon store copy` from a SQLite file (run twice), and
//! the built bot keeping its windows in PostgreSQL across restarts. Needs
//! `ZUNDA_TEST_DATABASE_URL` (each test prints a SKIPPED line without it).

mod support;

use std::time::{Duration, SystemTime};

use support::bot::{run_once, temp_dir};
use support::pg::PgSchema;
use support::world::World;
use zundamon::config::Secret;
use zundamon::store::{PendingQuestion, PendingStore, PostgresStore, SqliteStore};
use zundamon_actors::{ConversationStore, Exchange};

const DAY: Duration = Duration::from_secs(86_400);

fn pending(interaction_id: u64, channel_id: u64) -> PendingQuestion {
    PendingQuestion {
        interaction_id,
        application_id: 77,
        token: Secret::new(format!("token-{interaction_id}")),
        channel_id,
        guild_id: Some(9),
        user_id: 5,
        user_name: "ずんだ".into(),
        question: format!("質問 {interaction_id}"),
        received_at: SystemTime::now(),
        accepted: zundamon::store::acceptance_stamp(),
        delivered_parts: 1,
        follow_ups: vec![7, 8],
        fence: 0,
        attachments: Vec::new(),
        places: Vec::new(),
    }
}

#[tokio::test]
async fn store_copy_moves_windows_and_pending_questions_once() {
    let Some(pg) =
        PgSchema::new("postgres_store::store_copy_moves_windows_and_pending_questions_once").await
    else {
        return;
    };
    let dir = temp_dir("store-copy");
    let db = dir.join("zundamon.db");
    {
        let sqlite = SqliteStore::open(&db, 30 * DAY).unwrap();
        let with_id = |n: u64| Exchange::new(format!("q{n}"), format!("a{n}")).with_id(Some(n));
        sqlite
            .append(1, &[with_id(11), with_id(12)], 5)
            .await
            .unwrap();
        // Exchanges from before ids were kept: no id, and two identical ones.
        let old = Exchange::new("古い質問", "古い答えなのだ");
        sqlite
            .append(2, &[old.clone(), old.clone()], 5)
            .await
            .unwrap();
        sqlite.append(u64::MAX, &[with_id(31)], 5).await.unwrap();
        sqlite.record(&pending(500, 1)).await.unwrap();
        sqlite.record(&pending(400, 2)).await.unwrap();
        sqlite.close().await.unwrap();
    }

    let from = format!("sqlite:{}", db.display());
    let args = ["store", "copy", "--from", &from, "--to", &pg.url];
    let (code, out, err) = run_once(&args, &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("copied 5 exchanges of 3 channels (0 already there) and 2 pending questions (0 already there)"),
        "{out}"
    );

    // Twice: nothing is copied again.
    let (code, out, err) = run_once(&args, &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("copied 0 exchanges of 3 channels (5 already there) and 0 pending questions (2 already there)"),
        "{out}"
    );
    assert_eq!(pg.scalar("SELECT count(*) FROM exchanges").await, 5);

    let config: tokio_postgres::Config = pg.url.parse().unwrap();
    let store = PostgresStore::open_config(
        config,
        "test",
        1,
        30 * DAY,
        std::sync::Arc::new(SystemTime::now),
    )
    .await
    .unwrap();
    let window: Vec<String> = store
        .load(1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.question)
        .collect();
    assert_eq!(window, ["q11", "q12"]);
    assert_eq!(store.load(2, 10).await.unwrap().len(), 2);
    assert_eq!(store.load(u64::MAX, 10).await.unwrap()[0].id, Some(31));
    let questions = store.pending().await.unwrap();
    assert_eq!(
        questions,
        vec![
            pending_like(&questions[0], 500),
            pending_like(&questions[1], 400)
        ]
    );
    assert_eq!(questions[0].token.expose(), "token-500");
    assert_eq!(questions[0].delivered_parts, 1);
    store.close();

    // Wrong arguments say what to give.
    let (code, _, err) = run_once(
        &["store", "copy", "--from", "postgres://x/y", "--to", &pg.url],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("sqlite:PATH"), "{err}");
    let missing = format!("sqlite:{}", dir.join("nope.db").display());
    let (code, _, err) = run_once(&["store", "copy", "--from", &missing, "--to", &pg.url], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no such file"), "{err}");
    assert!(
        !dir.join("nope.db").exists(),
        "a missing source is not created"
    );

    let _ = std::fs::remove_dir_all(&dir);
    pg.drop_schema().await;
}

/// `q` if it is the copy of `pending(id, _)` (received_at is compared to the millisecond).
fn pending_like(q: &PendingQuestion, id: u64) -> PendingQuestion {
    assert_eq!(q.interaction_id, id);
    assert_eq!(q.question, format!("質問 {id}"));
    q.clone()
}

#[tokio::test]
async fn the_bot_keeps_its_windows_in_postgres_across_restarts() {
    let Some(pg) =
        PgSchema::new("postgres_store::the_bot_keeps_its_windows_in_postgres_across_restarts")
            .await
    else {
        return;
    };
    let mut world = World::builder("pg-bot").database(&pg.url).start().await;
    for (round, question) in ["一回目の質問なのだ", "二回目の質問なのだ"]
        .iter()
        .enumerate()
    {
        if round > 0 {
            // A different SQLite path each time: the window can only come from PostgreSQL.
            world.bot = world.second_process("unused-1.db", &[]).await;
            assert!(world.discord.wait_ready(Duration::from_secs(20)).await);
        }
        let sent = world
            .discord
            .send_interaction(700, 1, "ずんだ", question)
            .await;
        let delivered = world.wait_delivered(&sent, Duration::from_secs(30)).await;
        assert_eq!(delivered.len(), 1, "no answer; log:\n{}", world.bot.logs());
        world.bot.signal("TERM");
        assert!(world.bot.wait_exit(Duration::from_secs(20)).await.is_some());
        world.bot.assert_no_secrets_logged();
        for db in [world.db(), world.dir.join("unused-1.db")] {
            assert!(!db.exists(), "no SQLite file when PostgreSQL is configured");
        }
    }
    let second = world
        .openai
        .requests()
        .into_iter()
        .find(|body| {
            support::fake_openai::last_user_text(body)
                .unwrap_or_default()
                .contains("二回目")
        })
        .expect("the second question reached the model");
    let users: Vec<String> = support::fake_openai::user_texts(&second);
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(users[0].contains("一回目の質問なのだ"), "{users:?}");
    assert_eq!(pg.scalar("SELECT count(*) FROM exchanges").await, 2);
    drop(world);
    pg.drop_schema().await;
}

/// With `ZUNDA_TEST_DATABASE_URL` set, a server that is not there fails the test at once,
/// saying what to do, rather than skipping it or failing deep inside.
#[tokio::test]
#[should_panic(expected = "is set but PostgreSQL is unreachable")]
async fn an_unreachable_test_database_fails_the_test() {
    support::pg::connect("postgres://zunda:hunter2@127.0.0.1:1/test").await;
}

#[test]
fn the_test_database_is_named_without_its_password() {
    use support::pg::without_password;
    assert_eq!(
        without_password("postgres://zunda:hunter2@127.0.0.1:5432/test"),
        "postgres://zunda:***@127.0.0.1:5432/test"
    );
    assert_eq!(
        without_password("postgres://postgres@127.0.0.1:5432/test?password=hunter2&x=1"),
        "postgres://postgres@127.0.0.1:5432/test?password=***&x=1"
    );
    assert_eq!(
        without_password("host=127.0.0.1 user=zunda password=hunter2"),
        "host=127.0.0.1 user=zunda password=***"
    );
}
