//! The settings part of the store (model choices, token usage) on SQLite.

use super::*;

#[tokio::test]
async fn suite_model_choices_are_set_replaced_and_removed() {
    let dir = TempDir::new("suite-choices");
    crate::store::suite::model_choices_are_set_replaced_and_removed(&open(&dir)).await;
}

#[tokio::test]
async fn suite_token_usage_adds_up_per_user_and_day() {
    let dir = TempDir::new("suite-usage");
    crate::store::suite::token_usage_adds_up_per_user_and_day(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_concurrent_token_adds_all_count() {
    let dir = TempDir::new("suite-usage-concurrent");
    // Two connections to one file, as two processes would have.
    let stores: Vec<Arc<dyn crate::store::Store>> =
        vec![Arc::new(open(&dir)), Arc::new(open(&dir))];
    crate::store::suite::concurrent_token_adds_all_count(stores).await;
}

#[tokio::test]
async fn suite_prune_drops_old_token_usage() {
    let dir = TempDir::new("suite-usage-prune");
    crate::store::suite::prune_drops_old_token_usage(&open(&dir)).await;
}

#[tokio::test]
async fn suite_settings_are_shared_between_processes() {
    let dir = TempDir::new("suite-settings-shared");
    crate::store::suite::settings_are_shared_between_processes(&open(&dir), &open(&dir)).await;
}

#[tokio::test]
async fn settings_survive_a_restart() {
    use crate::store::SettingsStore;

    let dir = TempDir::new("settings-restart");
    {
        let store = open(&dir);
        store.set_model_choice(42, Some("qwen3")).await.unwrap();
        store.set_model_choice(43, Some("gone")).await.unwrap();
        store.set_model_choice(43, None).await.unwrap();
        store.add_tokens(77, "2025-06-01", 250).await.unwrap();
        // Not closed: the writes only reached the WAL, which the next open replays.
    }
    let store = open(&dir);
    assert_eq!(
        store.model_choice(42).await.unwrap().as_deref(),
        Some("qwen3")
    );
    assert_eq!(store.model_choice(43).await.unwrap(), None);
    assert_eq!(store.add_tokens(77, "2025-06-01", 50).await.unwrap(), 300);
}

#[test]
fn a_database_from_before_settings_is_migrated() {
    let dir = TempDir::new("migrate-0004");
    let path = dir.db();
    {
        // A file as the build before model choices left it: migrations 1–4 only.
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..4] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute_batch(
            "INSERT INTO exchanges (channel_id, question, answer, created_at)
             VALUES (1, 'q', 'a', strftime('%s', 'now'))",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = open(&dir);
    let (version, tables): (i64, i64) = store
        .conn
        .lock()
        .unwrap()
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_master
                     WHERE name IN ('model_choices', 'token_usage'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, tables), (MIGRATIONS.len() as i64, 2));
}
