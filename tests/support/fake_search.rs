//! A fake DuckDuckGo HTML endpoint on 127.0.0.1 (port 0), for tests.
//!
//! `POST /html/` answers with the fixture results page (`tests/fixtures/ddg_results.html`: a
//! redirect link, a direct link, an ad, HTML entities, Japanese text). Its behaviour is switched
//! with [`FakeSearch::set_mode`]; every request's form body is recorded.
//!
//! ```ignore
//! let search = FakeSearch::start().await;       // SEARCH_BASE_URL = search.base_url()
//! search.set_mode(SearchMode::RateLimited);     // 202 + challenge page, like DuckDuckGo under load
//! assert_eq!(search.queries(), ["ずんだ餅"]);
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The results page served in [`SearchMode::Normal`].
pub const FIXTURE: &str = include_str!("../fixtures/ddg_results.html");
/// The first organic result of the fixture (after the ad), as the bot should report it.
pub const FIXTURE_FIRST_TITLE: &str = "ずんだ餅 - Wikipedia";
pub const FIXTURE_FIRST_URL: &str =
    "https://ja.wikipedia.org/wiki/%E3%81%9A%E3%82%93%E3%81%A0%E9%A4%85";
/// The ad's title, which must never reach the model.
pub const FIXTURE_AD_TITLE: &str = "【公式】ずんだ餅通販 - 今なら送料無料";

/// DuckDuckGo's rate-limit answer: HTTP 202 with a bot challenge instead of results.
const CHALLENGE_PAGE: &str = r#"<!DOCTYPE html><html><head><title>DuckDuckGo</title></head><body>
<div class="anomaly-modal__modal" data-testid="anomaly-modal">
<div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div>
<div class="anomaly-modal__description">Please complete the following challenge to confirm this search was made by a human.</div>
</div></body></html>"#;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// 200 with the fixture page.
    Normal,
    /// 202 with a challenge page (DuckDuckGo's rate limit).
    RateLimited,
    /// 500.
    ServerError,
    /// Never answers: for timeouts.
    Hang,
}

/// One search request as received.
#[derive(Debug, Clone)]
pub struct RecordedSearch {
    /// The raw `application/x-www-form-urlencoded` body.
    pub body: String,
    /// The decoded `q` field.
    pub query: Option<String>,
    /// The decoded `kl` field.
    pub region: Option<String>,
    pub received_at: Instant,
}

struct State {
    mode: Mutex<SearchMode>,
    delay: Mutex<Duration>,
    echo_query: AtomicBool,
    requests: Mutex<Vec<RecordedSearch>>,
}

/// The running fake; stops (with all its connections) when dropped.
pub struct FakeSearch {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Drop for FakeSearch {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSearch {
    /// Starts the server on 127.0.0.1 with an OS-assigned port, in [`SearchMode::Normal`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake search");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(SearchMode::Normal),
            delay: Mutex::new(Duration::ZERO),
            echo_query: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve(listener, state.clone()));
        Self {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `SEARCH_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: SearchMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// When on, the page starts with an extra result titled `「{query}」の検索結果` linking to
    /// `https://search.example/?q={query}`, so tests can tell searches apart.
    pub fn set_echo_query(&self, on: bool) {
        self.state.echo_query.store(on, Ordering::SeqCst);
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<RecordedSearch> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The `q` of every request, in arrival order.
    pub fn queries(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.query)
            .collect()
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(state.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path();
    if path != "/html/" && path != "/html" {
        return Ok(html_response(StatusCode::NOT_FOUND, "not found".into()));
    }
    if request.method() != Method::POST {
        return Ok(html_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST only".into(),
        ));
    }
    let bytes = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let field = |name: &str| {
        url::form_urlencoded::parse(body.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let recorded = RecordedSearch {
        query: field("q"),
        region: field("kl"),
        body: body.clone(),
        received_at: Instant::now(),
    };
    let query = recorded.query.clone().unwrap_or_default();
    state.requests.lock().unwrap().push(recorded);

    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mode = *state.mode.lock().unwrap();
    Ok(match mode {
        SearchMode::Normal => {
            let page = if state.echo_query.load(Ordering::SeqCst) {
                with_echo(&query)
            } else {
                FIXTURE.to_owned()
            };
            html_response(StatusCode::OK, page)
        }
        SearchMode::RateLimited => html_response(StatusCode::ACCEPTED, CHALLENGE_PAGE.into()),
        SearchMode::ServerError => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html>error</html>".into(),
        ),
        SearchMode::Hang => {
            std::future::pending::<()>().await;
            unreachable!("pending never completes")
        }
    })
}

/// The fixture with a result for `query` inserted before the others.
fn with_echo(query: &str) -> String {
    let escaped = query
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let block = format!(
        r#"
          <div class="result results_links results_links_deep web-result ">
            <div class="links_main links_deep result__body">
              <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://search.example/?q={encoded}">「{escaped}」の検索結果</a></h2>
              <a class="result__snippet" href="https://search.example/?q={encoded}">Results for {escaped}.</a>
            </div>
          </div>"#
    );
    let marker = r#"<div id="links" class="results">"#;
    FIXTURE.replacen(marker, &format!("{marker}{block}"), 1)
}

fn html_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}
