//! The search client: DuckDuckGo's HTML endpoint over HTTP, the per-(query, region) result
//! cache, and the cool-down after a rate limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::format::{format_results, neutralize};
use super::parse::parse_results;
use super::{
    SearchError, SearchResult, CACHE_CAPACITY, MAX_QUERY_CHARS, RATE_LIMIT_COOLDOWN, UNAVAILABLE,
};
use crate::config::SearchConfig;
use crate::ops::metrics::Metrics;

const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// DuckDuckGo serves its HTML page to browsers; an honest but browser-compatible agent string.
const USER_AGENT: &str = concat!(
    "Mozilla/5.0 (compatible; zundamon/",
    env!("CARGO_PKG_VERSION"),
    "; +https://github.com/)"
);

type CacheKey = (String, String);

/// DuckDuckGo search with a result cache. Share it behind an `Arc`.
pub struct WebSearch {
    http: reqwest::Client,
    endpoint: String,
    referer: String,
    upstream: String,
    region: String,
    max_results: usize,
    timeout: Duration,
    /// `None` when `cache_secs` is 0: every lookup goes upstream.
    cache: Option<Cache<CacheKey, Arc<[SearchResult]>>>,
    blocked_until: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WebSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSearch")
            .field("upstream", &self.upstream)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl WebSearch {
    /// A search client for `config.base_url`. Needs a rustls crypto provider installed.
    pub fn new(config: &SearchConfig, metrics: Arc<Metrics>) -> Result<Self, SearchError> {
        let base = config.base_url.trim_end_matches('/');
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let tls = crate::ops::tls::client_config().map_err(SearchError::Setup)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|err| SearchError::Setup(err.without_url().to_string()))?;
        Ok(Self {
            http,
            endpoint: format!("{base}/html/"),
            referer: format!("{base}/"),
            upstream: base.to_owned(),
            region: config.region.trim().to_owned(),
            max_results: config.max_results.max(1),
            timeout,
            cache: (config.cache_secs > 0).then(|| {
                Cache::builder()
                    .max_capacity(CACHE_CAPACITY as u64)
                    .time_to_live(Duration::from_secs(config.cache_secs))
                    .build()
            }),
            blocked_until: Mutex::new(None),
            metrics,
        })
    }

    /// The tool result for `query`: formatted results, or [`UNAVAILABLE`] when searching failed.
    pub async fn tool_result(&self, query: &str) -> String {
        match self.search(query).await {
            Ok(results) => format_results(&normalize_query(query), &results),
            Err(err) => {
                warn!(error = %err, "web search unavailable");
                UNAVAILABLE.to_owned()
            }
        }
    }

    /// Like [`tool_result`](Self::tool_result), with the URLs of the results the model is shown
    /// (the only ones a sources line may cite).
    pub async fn tool_result_with_urls(&self, query: &str) -> (String, Vec<String>) {
        match self.search(query).await {
            Ok(results) => {
                let text = format_results(&normalize_query(query), &results);
                let urls = results
                    .iter()
                    .filter(|result| text.contains(&neutralize(&result.url)))
                    .map(|result| result.url.clone())
                    .collect();
                (text, urls)
            }
            Err(err) => {
                warn!(error = %err, "web search unavailable");
                (UNAVAILABLE.to_owned(), Vec::new())
            }
        }
    }

    /// The top `max_results` results for `query`, from the cache when fresh. Concurrent lookups
    /// of the same query share one upstream request and its outcome; a failure is not cached.
    pub async fn search(&self, query: &str) -> Result<Arc<[SearchResult]>, SearchError> {
        let query = normalize_query(query);
        let Some(cache) = &self.cache else {
            return self.lookup(&query).await;
        };
        let key = (query.clone(), self.region.clone());
        if let Some(results) = cache.get(&key).await {
            self.metrics.search_request("cached");
            debug!(query = %query, "search cache hit");
            return Ok(results);
        }
        let asked_upstream = AtomicBool::new(false);
        let result = cache
            .try_get_with(key, async {
                asked_upstream.store(true, Ordering::Relaxed);
                self.lookup(&query).await
            })
            .await
            .map_err(|err| SearchError::clone(&err));
        if !asked_upstream.load(Ordering::Relaxed) && result.is_ok() {
            // Another caller's request for the same query answered this one.
            self.metrics.search_request("cached");
            debug!(query = %query, "search answered by a concurrent lookup");
        }
        result
    }

    /// One upstream search (unless cooling down after a rate limit), counted in the metrics.
    async fn lookup(&self, query: &str) -> Result<Arc<[SearchResult]>, SearchError> {
        if let Some(remaining) = self.cooldown_left() {
            self.metrics.search_request("backoff");
            return Err(SearchError::CoolingDown {
                upstream: self.upstream.clone(),
                remaining_secs: remaining.as_secs().max(1),
            });
        }
        let started = std::time::Instant::now();
        let result = self.fetch(query).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SearchError::RateLimited { .. }) => "rate_limited",
            Err(_) => "error",
        };
        self.metrics.search_request(outcome);
        debug!(query = %query, outcome, elapsed_ms = started.elapsed().as_millis() as u64, "web search");
        let html = match result {
            Ok(html) => html,
            Err(err) => {
                if matches!(err, SearchError::RateLimited { .. }) {
                    *self.blocked_until.lock().expect("search cooldown lock") =
                        Some(Instant::now() + RATE_LIMIT_COOLDOWN);
                }
                return Err(err);
            }
        };
        Ok(parse_results(&html, self.max_results).into())
    }

    async fn fetch(&self, query: &str) -> Result<String, SearchError> {
        let mut form = vec![("q", query)];
        if !self.region.is_empty() {
            form.push(("kl", self.region.as_str()));
        }
        let mut response = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::REFERER, &self.referer)
            .form(&form)
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        match response.status().as_u16() {
            200 => {}
            // DuckDuckGo's rate limit: a 202 with an anomaly/challenge page instead of results.
            202 => {
                return Err(SearchError::RateLimited {
                    upstream: self.upstream.clone(),
                })
            }
            status => {
                return Err(SearchError::Status {
                    upstream: self.upstream.clone(),
                    status,
                })
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.transport_error(err))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() >= MAX_BODY_BYTES {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn transport_error(&self, err: reqwest::Error) -> SearchError {
        if err.is_timeout() {
            SearchError::Timeout {
                upstream: self.upstream.clone(),
                secs: self.timeout.as_secs(),
            }
        } else {
            SearchError::Transport {
                upstream: self.upstream.clone(),
                reason: err.without_url().to_string(),
            }
        }
    }

    fn cooldown_left(&self) -> Option<Duration> {
        let mut blocked = self.blocked_until.lock().expect("search cooldown lock");
        match *blocked {
            Some(until) if until > Instant::now() => Some(until - Instant::now()),
            Some(_) => {
                *blocked = None;
                None
            }
            None => None,
        }
    }
}

/// The query as sent and cached: whitespace collapsed, length bounded.
pub(super) fn normalize_query(query: &str) -> String {
    let collapsed = query.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(MAX_QUERY_CHARS).collect()
}
