//! Editing messages an interaction already has: the streamed answer's intermediate edits (one
//! attempt each, reporting the rate-limit state so the caller can pace itself and coalesce),
//! and the follow-ups it creates, edits and deletes as the text grows.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::deliver::{
    api_error, check_content, check_token, describe, message_body, rate_limit_wait, Call, Delivery,
    DeliveryError, Failure, Route, TextFile,
};

/// What one intermediate edit came to.
#[derive(Debug)]
pub enum LiveEdit {
    /// Done. `slow_down` is how long Discord's rate-limit headers ask to wait before the next
    /// request on this route (zero while the bucket has room).
    Done { slow_down: Duration },
    /// 429: nothing changed; try again (with the latest text) after this long.
    RateLimited(Duration),
    /// Anything else; the final delivery will try again with retries.
    Failed(DeliveryError),
}

impl Delivery {
    fn webhook_url(&self, token: &str, message: Option<u64>) -> String {
        match message {
            None => format!(
                "{}/webhooks/{}/{token}/messages/@original",
                self.api, self.application_id
            ),
            Some(id) => format!(
                "{}/webhooks/{}/{token}/messages/{id}",
                self.api, self.application_id
            ),
        }
    }

    /// One attempt at replacing the content of the original response (`message` `None`) or of
    /// a follow-up, within one request timeout.
    pub async fn edit_live(&self, token: &str, message: Option<u64>, content: &str) -> LiveEdit {
        let route = match message {
            None => Route::EditOriginal,
            Some(message_id) => Route::EditFollowUp { message_id },
        };
        if let Err(err) = check_token(route, token).and(check_content(route, content)) {
            return LiveEdit::Failed(err);
        }
        let request = self
            .client
            .patch(self.webhook_url(token, message))
            .timeout(self.request_timeout)
            .json(&message_body(content));
        match request.send().await {
            Ok(response) if response.status().is_success() => LiveEdit::Done {
                slow_down: bucket_wait(response.headers()),
            },
            Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap_or_default();
                LiveEdit::RateLimited(rate_limit_wait(&headers, &body))
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                let (code, message) = api_error(&body, token);
                LiveEdit::Failed(DeliveryError::Rejected {
                    route,
                    status,
                    code,
                    message,
                })
            }
            Err(err) => LiveEdit::Failed(DeliveryError::GaveUp {
                route,
                attempts: 1,
                last: Failure::Transport(describe(err, token)),
            }),
        }
    }

    /// Posts a follow-up (with retries, within `deadline`) and returns its message id.
    pub async fn create_follow_up(
        &self,
        token: &str,
        content: &str,
        deadline: Instant,
    ) -> Result<u64, DeliveryError> {
        self.create_follow_up_with(token, content, None, deadline)
            .await
    }

    /// Posts a follow-up carrying `file`, if any (see [`create_follow_up`](Self::create_follow_up)).
    pub async fn create_follow_up_with(
        &self,
        token: &str,
        content: &str,
        file: Option<&TextFile>,
        deadline: Instant,
    ) -> Result<u64, DeliveryError> {
        let route = Route::FollowUp;
        check_token(route, token)?;
        check_content(route, content)?;
        let call = Call {
            route,
            method: Method::POST,
            url: format!("{}/webhooks/{}/{token}", self.api, self.application_id),
            auth: None,
            body: message_body(content),
            secret: token,
        };
        let body = self
            .send_with_file(call, file, self.delivery_policy(deadline))
            .await?;
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|message| message["id"].as_str()?.parse().ok())
            .ok_or(DeliveryError::Invalid {
                route,
                reason: "Discord's answer has no message id".into(),
            })
    }

    /// Replaces a follow-up's content (with retries, within `deadline`).
    pub async fn edit_follow_up(
        &self,
        token: &str,
        message_id: u64,
        content: &str,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        self.edit_follow_up_with(token, message_id, content, None, deadline)
            .await
    }

    /// Replaces a follow-up's content and, with `file`, its attachments by exactly that file
    /// (so editing again never shows the file twice).
    pub async fn edit_follow_up_with(
        &self,
        token: &str,
        message_id: u64,
        content: &str,
        file: Option<&TextFile>,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let route = Route::EditFollowUp { message_id };
        check_token(route, token)?;
        check_content(route, content)?;
        let call = Call {
            route,
            method: Method::PATCH,
            url: self.webhook_url(token, Some(message_id)),
            auth: None,
            body: message_body(content),
            secret: token,
        };
        self.send_with_file(call, file, self.delivery_policy(deadline))
            .await
            .map(drop)
    }

    /// Deletes a follow-up (with retries, within `deadline`).
    pub async fn delete_follow_up(
        &self,
        token: &str,
        message_id: u64,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let route = Route::DeleteFollowUp { message_id };
        check_token(route, token)?;
        let call = Call {
            route,
            method: Method::DELETE,
            url: self.webhook_url(token, Some(message_id)),
            auth: None,
            body: Value::Null,
            secret: token,
        };
        self.send(call, self.delivery_policy(deadline)).await
    }
}

/// The longest a nearly empty bucket holds the next live edit (Discord's buckets reset within
/// seconds; a larger value is a server's mistake, and the final delivery retries anyway).
const MAX_BUCKET_WAIT: Duration = Duration::from_secs(60);

/// How long to hold the next request when the bucket is (nearly) empty: Discord's
/// `X-RateLimit-Reset-After` once `X-RateLimit-Remaining` is down to one or none.
fn bucket_wait(headers: &HeaderMap) -> Duration {
    let remaining = headers
        .get("x-ratelimit-remaining")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match remaining {
        Some(0 | 1) => headers
            .get("x-ratelimit-reset-after")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::retry::parse_seconds)
            .map_or(Duration::ZERO, |wait| wait.min(MAX_BUCKET_WAIT)),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_nearly_empty_bucket_slows_the_next_edit() {
        let roomy = headers(&[
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset-after", "2"),
        ]);
        assert_eq!(bucket_wait(&roomy), Duration::ZERO);
        let last = headers(&[
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset-after", "2.5"),
        ]);
        assert_eq!(bucket_wait(&last), Duration::from_millis(2500));
        let absurd = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "1e20"),
        ]);
        assert_eq!(bucket_wait(&absurd), Duration::from_secs(60));
        let nonsense = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "NaN"),
        ]);
        assert_eq!(bucket_wait(&nonsense), Duration::ZERO);
        assert_eq!(bucket_wait(&HeaderMap::new()), Duration::ZERO);
    }
}
