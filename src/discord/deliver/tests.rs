//! Tests of the Discord REST client: routes and errors without tokens, content and token checks,
//! 429 waits and backoff, and delivery against an unreachable server.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use tokio::time::Instant;

use super::errors::UNKNOWN_INTERACTION;
use super::send::{backoff, BACKOFF_BASE, BACKOFF_CAP, DEFAULT_RATE_LIMIT_WAIT};
use super::*;
use crate::retry;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn rate_limit_wait_prefers_retry_after_then_reset_after_then_body() {
    let body = br#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#;
    let both = headers(&[("retry-after", "2"), ("x-ratelimit-reset-after", "1.5")]);
    assert_eq!(rate_limit_wait(&both, body), Duration::from_secs(2));
    let reset = headers(&[("x-ratelimit-reset-after", "1.5")]);
    assert_eq!(rate_limit_wait(&reset, body), Duration::from_millis(1500));
    assert_eq!(
        rate_limit_wait(&HeaderMap::new(), body),
        Duration::from_millis(250)
    );
    assert_eq!(
        rate_limit_wait(&HeaderMap::new(), b"not json"),
        DEFAULT_RATE_LIMIT_WAIT
    );
}

#[test]
fn rate_limit_wait_ignores_nonsense_values() {
    let bad = headers(&[("retry-after", "soon"), ("x-ratelimit-reset-after", "-3")]);
    let body = br#"{"retry_after":"NaN"}"#;
    assert_eq!(rate_limit_wait(&bad, body), DEFAULT_RATE_LIMIT_WAIT);
    let fractional = headers(&[("retry-after", " 0.5 ")]);
    assert_eq!(
        rate_limit_wait(&fractional, b""),
        Duration::from_millis(500)
    );
    let huge = headers(&[("retry-after", "1e300")]);
    assert_eq!(rate_limit_wait(&huge, b""), retry::MAX_SERVER_WAIT);
}

#[test]
fn backoff_doubles_from_half_a_second_and_caps_at_thirty() {
    let ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
    for (attempt, ceiling) in (1..=9).zip(ceilings) {
        let wait = backoff(attempt).as_secs_f64();
        assert!(
            wait >= ceiling && wait <= ceiling * 1.5,
            "{attempt}: {wait}"
        );
    }
    assert!(backoff(0) >= BACKOFF_BASE && backoff(0) <= BACKOFF_BASE * 3 / 2);
    assert!(backoff(u32::MAX) >= BACKOFF_CAP && backoff(u32::MAX) <= BACKOFF_CAP * 3 / 2);
}

#[test]
fn rate_limit_wait_survives_absurd_values() {
    for value in [
        "1e20",
        "inf",
        "-inf",
        "NaN",
        "-1",
        "99999999999999999999999999",
    ] {
        let wait = rate_limit_wait(&headers(&[("retry-after", value)]), b"");
        assert!(wait <= retry::MAX_SERVER_WAIT, "{value}: {wait:?}");
    }
    let body = br#"{"retry_after":1e300}"#;
    assert_eq!(
        rate_limit_wait(&HeaderMap::new(), body),
        retry::MAX_SERVER_WAIT
    );
}

#[test]
fn routes_and_errors_never_show_tokens() {
    let routes = [
        Route::Callback { interaction_id: 7 },
        Route::EditOriginal,
        Route::FollowUp,
        Route::ChannelMessage { channel_id: 9 },
    ];
    for route in routes {
        let shown = route.to_string();
        assert!(shown.contains(":token") || shown.contains("/channels/"));
    }
    let (code, message) = api_error(
        br#"{"code":10062,"message":"Unknown interaction sekrit"}"#,
        "sekrit",
    );
    let err = DeliveryError::Rejected {
        route: Route::EditOriginal,
        status: 404,
        code,
        message,
    };
    assert!(matches!(
        err,
        DeliveryError::Rejected {
            code: Some(UNKNOWN_INTERACTION),
            ..
        }
    ));
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        err.to_string(),
        "Discord rejected PATCH /webhooks/:app/:token/messages/@original with HTTP 404: \
         Unknown interaction :token (code 10062)"
    );
}

#[test]
fn content_and_tokens_are_checked_before_sending() {
    let route = Route::FollowUp;
    assert!(check_content(route, "なのだ").is_ok());
    assert!(check_content(route, " \n ").is_err());
    assert!(check_content(route, &"😀".repeat(1000)).is_ok());
    assert!(check_content(route, &"😀".repeat(1001)).is_err());
    assert!(check_token(route, "aW50ZXJhY3Rpb246MTIz-_.=").is_ok());
    assert!(check_token(route, "").is_err());
    assert!(check_token(route, "abc/../../channels").is_err());
    assert!(check_token(route, "abc?x=1").is_err());
}

#[test]
fn every_message_body_disables_mentions() {
    let body = message_body("@everyone hi");
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(body["content"], "@everyone hi");
}

#[test]
fn api_base_is_normalised() {
    for base in [
        "https://discord.com",
        "https://discord.com/",
        "https://discord.com/api",
        "https://discord.com/api/v10/",
    ] {
        let delivery = Delivery::new(base, 1, Duration::from_secs(1));
        assert_eq!(delivery.api, "https://discord.com/api/v10");
    }
}

#[tokio::test]
async fn unreachable_discord_gives_up_without_leaking_the_token() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let delivery = Delivery::new(&base, 1, Duration::from_millis(500));
    let token = "c2VjcmV0LXRva2Vu";
    let deadline = Instant::now() + Duration::from_millis(1200);
    let err = delivery
        .edit_original(token, "hello", deadline)
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(token), "{shown}");
    assert!(
        matches!(err, DeliveryError::GaveUp { attempts: 2.., .. }),
        "{shown}"
    );

    let err = delivery.defer(1, token).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::GaveUp { attempts: 2, .. }),
        "{err}"
    );
    assert!(!format!("{err:?}").contains(token));
}

#[tokio::test]
async fn empty_delivery_is_refused() {
    let delivery = Delivery::new("http://127.0.0.1:9", 1, Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(1);
    let err = delivery.deliver("t", &[], deadline).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Invalid { .. }));
    let parts = vec!["fine".to_string(), String::new()];
    let err = delivery.deliver("t", &parts, deadline).await.unwrap_err();
    assert!(matches!(
        err,
        DeliveryError::Invalid {
            route: Route::FollowUp,
            ..
        }
    ));
}
