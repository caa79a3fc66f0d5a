//! The settings part of the store (model choices, token usage) on PostgreSQL.

use super::*;

#[tokio::test]
async fn suite_model_choices_are_set_replaced_and_removed() {
    let Some(db) = TestDb::new("suite_model_choices_are_set_replaced_and_removed").await else {
        return;
    };
    suite::model_choices_are_set_replaced_and_removed(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_token_usage_adds_up_per_user_and_day() {
    let Some(db) = TestDb::new("suite_token_usage_adds_up_per_user_and_day").await else {
        return;
    };
    suite::token_usage_adds_up_per_user_and_day(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_concurrent_token_adds_all_count() {
    let Some(db) = TestDb::new("suite_concurrent_token_adds_all_count").await else {
        return;
    };
    // Four stores with pools of their own, as four processes on one database would have.
    let mut stores: Vec<Arc<dyn crate::store::Store>> = Vec::new();
    for _ in 0..4 {
        let store = PostgresStore::open_config(
            db.config.clone(),
            "test",
            4,
            DAY,
            Arc::new(SystemTime::now),
        )
        .await
        .unwrap();
        stores.push(Arc::new(store));
    }
    suite::concurrent_token_adds_all_count(stores).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_prune_drops_old_token_usage() {
    let Some(db) = TestDb::new("suite_prune_drops_old_token_usage").await else {
        return;
    };
    suite::prune_drops_old_token_usage(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_settings_are_shared_between_processes() {
    let Some(db) = TestDb::new("suite_settings_are_shared_between_processes").await else {
        return;
    };
    let other =
        PostgresStore::open_config(db.config.clone(), "test", 2, DAY, Arc::new(SystemTime::now))
            .await
            .unwrap();
    suite::settings_are_shared_between_processes(&db.store, &other).await;
    other.close();
    db.drop_schema().await;
}

#[tokio::test]
async fn store_copy_moves_model_choices_and_token_usage_once() {
    use crate::store::{SettingsStore, SqliteStore};

    let Some(db) = TestDb::new("store_copy_moves_model_choices_and_token_usage_once").await else {
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("zunda-store-copy-settings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = SqliteStore::open(&dir.join("zundamon.db"), DAY).unwrap();
    sqlite.set_model_choice(1, Some("qwen3")).await.unwrap();
    sqlite
        .set_model_choice(u64::MAX, Some("gpt-4o-mini"))
        .await
        .unwrap();
    sqlite.add_tokens(77, "2025-06-01", 100).await.unwrap();
    sqlite.add_tokens(u64::MAX, "2025-06-02", 7).await.unwrap();

    let report = crate::store::copy::copy(&sqlite, &db.store).await.unwrap();
    assert_eq!((report.model_choices, report.model_choices_present), (2, 0));
    assert_eq!((report.usage_days, report.usage_days_present), (2, 0));
    assert_eq!(
        db.store.model_choice(1).await.unwrap().as_deref(),
        Some("qwen3")
    );
    assert_eq!(
        db.store.model_choice(u64::MAX).await.unwrap().as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        db.store.tokens_on("2025-06-02").await.unwrap(),
        vec![(u64::MAX, 7)]
    );

    // Run again after the old deployment spent more and an admin chose anew on the new one: the
    // usage is not counted twice, and the newer choice stays.
    sqlite.add_tokens(77, "2025-06-01", 20).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    db.store.set_model_choice(1, Some("newer")).await.unwrap();
    let report = crate::store::copy::copy(&sqlite, &db.store).await.unwrap();
    assert_eq!((report.model_choices, report.model_choices_present), (0, 2));
    assert_eq!((report.usage_days, report.usage_days_present), (1, 1));
    assert_eq!(
        db.store.model_choice(1).await.unwrap().as_deref(),
        Some("newer")
    );
    assert_eq!(db.store.tokens_used(77, "2025-06-01").await.unwrap(), 120);
    assert!(
        report.to_string().contains(
            "0 model choices (2 already there) and 1 days of token usage (1 already there)"
        ),
        "{report}"
    );
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_schema().await;
}
