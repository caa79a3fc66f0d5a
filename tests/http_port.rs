//! The public HTTP port under hostile and unlucky conditions: slow clients by the hundred, a
//! replayed signed interaction, an event actor that never answers, concurrent scrapes, and
//! `/metrics` moved to an internal address. Most tests run the built binary against the loopback
//! fakes; the stalled event actor is a test actor behind the real HTTP server, in process.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use support::bot::metric_in;
use support::fake_discord::{interaction_payload, SentInteraction};
use support::http_load::{
    fresh_client, percentile, public_key_hex, rss_kib, signed, signing_key, unix_now, SlowClients,
    PING,
};
use support::world::{World, USER};
use tokio::net::TcpListener;
use tokio::sync::watch;
use zundamon::discord::interactions::{self, InteractionsEndpoint};
use zundamon::ops::health::Health;
use zundamon::ops::http::{HttpSettings, Routes, Server};
use zundamon::ops::metrics::Metrics;
use zundamon::question::limits::BUSY_REPLY;
use zundamon::question::router::RouterMsg;

const WAIT_REPLY: &str = "ちょっと待ってね。";

/// A world whose bot also takes signed interactions over HTTP (`DISCORD_PUBLIC_KEY`).
async fn http_world(name: &str, extra: &[(&str, &str)]) -> World {
    World::builder(name)
        .env("DISCORD_PUBLIC_KEY", &public_key_hex(&signing_key()))
        .envs(extra)
        .start()
        .await
}

/// The HTTP side of a world: its address and signed commands.
trait HttpSide {
    fn addr(&self) -> SocketAddr;
    fn command(&self, channel: u64, question: &str) -> (SentInteraction, String);
    fn model_calls_for(&self, question: &str) -> usize;
    fn edits_of(&self, sent: &SentInteraction) -> usize;
}

impl HttpSide for World {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.bot.port))
    }

    /// A signed `/zunda` payload for a fresh interaction the fake Discord knows as acknowledged.
    fn command(&self, channel: u64, question: &str) -> (SentInteraction, String) {
        let sent = self.discord.register_acknowledged_interaction(channel);
        let payload = interaction_payload(
            sent.id,
            &sent.token,
            channel,
            USER,
            "ずんだユーザー",
            question,
        )
        .to_string();
        (sent, payload)
    }

    /// The model requests that asked `question`.
    fn model_calls_for(&self, question: &str) -> usize {
        self.model_requests_for(question).len()
    }

    /// The edits of the interaction's first message (the answer replacing `ちょっと待ってね。`).
    fn edits_of(&self, sent: &SentInteraction) -> usize {
        self.discord
            .requests()
            .iter()
            .filter(|r| r.is("PATCH", &format!("/{}/messages/@original", sent.token)))
            .count()
    }
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: String,
) -> (u16, String) {
    let mut request = client.post(format!("http://{addr}{path}")).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the HTTP server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, String) {
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("the HTTP server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_command_is_answered_once() {
    let world = http_world("http-replay", &[]).await;
    let client = fresh_client();
    let key = signing_key();
    let question = "一度だけ答えてほしいのだ";
    let (sent, payload) = world.command(1400, question);
    let now = unix_now();
    let headers = signed(&key, now, &payload);

    let (status, body) = post(
        &client,
        world.addr(),
        "/interactions",
        &headers,
        payload.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["data"]["content"], WAIT_REPLY);

    // The captured request, sent again as is, and re-signed with a newer timestamp (a replay
    // cannot do that without the key, but the id alone must be enough to refuse it).
    for headers in [headers.clone(), signed(&key, now + 1, &payload)] {
        let (status, body) = post(
            &client,
            world.addr(),
            "/interactions",
            &headers,
            payload.clone(),
        )
        .await;
        assert_eq!(status, 409, "a replay must not be answered again: {body}");
    }
    // A replayed PING may be answered.
    for _ in 0..2 {
        let ping = signed(&key, now, PING);
        let (status, body) = post(&client, world.addr(), "/interactions", &ping, PING.into()).await;
        assert_eq!((status, body.as_str()), (200, r#"{"type":1}"#));
    }

    // A body that is not JSON, and a command without a field Discord always sends (and serenity
    // requires), are refused with 400 (a command the event actor took would get 200).
    let (_, incomplete_payload) = world.command(1401, "欠けた質問なのだ");
    let mut incomplete_payload: Value = serde_json::from_str(&incomplete_payload).unwrap();
    incomplete_payload
        .as_object_mut()
        .unwrap()
        .remove("attachment_size_limit");
    for body in ["{not json".to_owned(), incomplete_payload.to_string()] {
        let headers = signed(&key, now, &body);
        let (status, text) = post(&client, world.addr(), "/interactions", &headers, body).await;
        assert_eq!(status, 400, "{text}");
    }

    let edits = world
        .discord
        .wait_for_requests(
            |r| r.is("PATCH", &format!("/{}/messages/@original", sent.token)),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(edits.len(), 1, "log:\n{}", world.bot.logs());
    // A later question in the channel is answered after any second answer to the first.
    let (later, payload) = world.command(1400, "次の質問なのだ");
    let headers = signed(&key, unix_now(), &payload);
    let (status, body) = post(&client, world.addr(), "/interactions", &headers, payload).await;
    assert_eq!(status, 200, "{body}");
    let edits = world
        .discord
        .wait_for_requests(
            |r| r.is("PATCH", &format!("/{}/messages/@original", later.token)),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(edits.len(), 1, "log:\n{}", world.bot.logs());
    assert_eq!(world.model_calls_for(question), 1, "one model call");
    assert_eq!(world.edits_of(&sent), 1, "one answer");

    // Two scrapes at once agree on every counter, and a later scrape does not jump.
    let (a, b) = tokio::join!(
        get(&client, world.addr(), "/metrics"),
        get(&client, world.addr(), "/metrics")
    );
    let after = get(&client, world.addr(), "/metrics").await;
    for name in [
        "zundamon_interactions_total",
        "zundamon_evictions_total",
        "zundamon_channel_actors",
        "zundamon_answer_seconds_count",
    ] {
        let values = [&a.1, &b.1, &after.1].map(|text| metric_in(text, name));
        assert!(values[0].is_some(), "{name} missing:\n{}", a.1);
        assert!(values.iter().all(|v| *v == values[0]), "{name}: {values:?}");
    }
    // The command and the later one; the replays are not counted.
    assert_eq!(metric_in(&a.1, "zundamon_interactions_total"), Some(2.0));
    world.bot.assert_no_secrets_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_signed_commands_stay_prompt_while_hundreds_of_clients_trickle() {
    let world = http_world(
        "http-slow-clients",
        &[
            ("ZUNDA_HTTP_HEADER_TIMEOUT_SECS", "3"),
            ("ZUNDA_HTTP_BODY_TIMEOUT_SECS", "2"),
            ("ZUNDA_HTTP_IDLE_TIMEOUT_SECS", "2"),
            ("ZUNDA_HTTP_MAX_CONNECTIONS", "256"),
            ("ZUNDA_RATE_BURST", "1000"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let client = fresh_client();
    let key = signing_key();
    let rss_before = rss_kib(world.bot.pid());

    // 400 connections send a header byte a second and never finish it; 100 send a POST head
    // and then one body byte a second. 500 in all, above the cap of 256.
    let tick = Duration::from_secs(1);
    let load = SlowClients::start(world.addr(), 400, 100, tick, tick);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut probe_times = Vec::new();
    let mut command_times = Vec::new();
    let mut held = Vec::new();
    let mut rss_peak = 0;
    let mut sent = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        for path in ["/", "/healthz"] {
            let started = Instant::now();
            let (status, _) = get(&client, world.addr(), path).await;
            probe_times.push(started.elapsed());
            assert_eq!(status, 200, "{path} under load");
        }
        let started = Instant::now();
        let ping = signed(&key, unix_now(), PING);
        let (status, body) = post(&client, world.addr(), "/interactions", &ping, PING.into()).await;
        probe_times.push(started.elapsed());
        assert_eq!((status, body.as_str()), (200, r#"{"type":1}"#));
        if round % 4 == 1 {
            let question = format!("混んでいても答えてほしいのだ{round}");
            let (interaction, payload) = world.command(1500 + round, &question);
            let started = Instant::now();
            let (status, body) = post(
                &client,
                world.addr(),
                "/interactions",
                &signed(&key, unix_now(), &payload),
                payload,
            )
            .await;
            command_times.push(started.elapsed());
            assert_eq!(status, 200, "{body}");
            let response: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(response["data"]["content"], WAIT_REPLY);
            sent.push(interaction);
        }
        let (_, metrics) = get(&client, world.addr(), "/metrics").await;
        held.push(metric_in(&metrics, "zundamon_http_connections").unwrap_or(f64::NAN));
        rss_peak = rss_peak.max(rss_kib(world.bot.pid()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = load.stop().await;

    let slowest_probe = percentile(&mut probe_times, 100.0);
    let slowest_command = percentile(&mut command_times, 100.0);
    eprintln!(
        "probes: {} p50 {:?} max {slowest_probe:?}; commands: {} max {slowest_command:?}; \
         connections held (gauge) max {:?}; slow connections opened {}, ended by the server {}; \
         longest trickle {} ms; RSS {rss_before:?} KiB → peak {rss_peak} KiB",
        probe_times.len(),
        percentile(&mut probe_times, 50.0),
        command_times.len(),
        held.iter().cloned().fold(0.0, f64::max),
        report.opened.load(Ordering::Relaxed),
        report.ended_by_server.load(Ordering::Relaxed),
        report.longest_trickle_ms.load(Ordering::Relaxed),
    );
    // Generous bounds: App Runner's health check gives up after 2 s, Discord after 3 s.
    assert!(slowest_probe < Duration::from_secs(2), "{slowest_probe:?}");
    assert!(
        slowest_command < Duration::from_secs(3),
        "{slowest_command:?}"
    );
    // The cap holds (the gauge counts the scrape's own connection too).
    assert!(
        held.iter().all(|n| *n <= 256.0),
        "connections held: {held:?}"
    );
    // Trickling connections are cut off: by the header timeout (3 s) at the latest, with slack
    // for a loaded machine, or sooner to make room.
    let longest = report.longest_trickle_ms.load(Ordering::Relaxed);
    assert!(
        longest > 0 && longest < 6_000,
        "longest trickle {longest} ms"
    );
    assert!(
        report.ended_by_server.load(Ordering::Relaxed) >= 500,
        "every slow connection is ended by the server"
    );
    // Held bodies get 408 when the body timeout passes (or the connection closed to make room).
    let statuses = report.body_statuses.lock().unwrap().clone();
    assert!(
        statuses.iter().any(|s| s.starts_with("HTTP/1.1 408")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.starts_with("HTTP/1.1 408") || s.starts_with("(closed")),
        "{statuses:?}"
    );
    if let Some(before) = rss_before {
        assert!(
            rss_peak < before + 64 * 1024,
            "resident memory grew from {before} KiB to {rss_peak} KiB"
        );
    }

    // Every command asked under load is answered.
    for interaction in &sent {
        let edits = world
            .discord
            .wait_for_requests(
                |r| {
                    r.is(
                        "PATCH",
                        &format!("/{}/messages/@original", interaction.token),
                    )
                },
                1,
                Duration::from_secs(20),
            )
            .await;
        assert_eq!(edits.len(), 1);
    }
    // Once the load is gone the held connections are released.
    let mut open = f64::NAN;
    for _ in 0..50 {
        let (_, metrics) = get(&client, world.addr(), "/metrics").await;
        open = metric_in(&metrics, "zundamon_http_connections").unwrap_or(f64::NAN);
        if open <= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open <= 2.0, "{open} connections still open after the load");
}

#[tokio::test]
async fn metrics_can_move_to_an_internal_address() {
    let world = http_world(
        "http-metrics-bind",
        &[("ZUNDA_METRICS_BIND", "127.0.0.1:0")],
    )
    .await;
    let client = fresh_client();
    let logs = world.bot.logs();
    let port: u16 = logs
        .split("metrics server listening on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metrics address logged:\n{logs}"));
    let internal = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, text) = get(&client, internal, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("zundamon_channel_actors"), "{text}");
    assert_eq!(get(&client, internal, "/").await.0, 404);
    // The public port keeps the probes and no longer shows the metrics.
    assert_eq!(get(&client, world.addr(), "/metrics").await.0, 404);
    assert_eq!(get(&client, world.addr(), "/").await, (200, "ack".into()));
}

/// An event actor that takes `/zunda` requests and never answers them.
struct StalledRouter;

type Held = Arc<Mutex<Vec<RpcReplyPort<zundamon::question::router::ControlReply>>>>;

impl Actor for StalledRouter {
    type Msg = RouterMsg;
    type State = Held;
    type Arguments = Held;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        held: Held,
    ) -> Result<Held, ActorProcessingErr> {
        Ok(held)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        held: &mut Held,
    ) -> Result<(), ActorProcessingErr> {
        if let RouterMsg::HttpCommand(_, reply) = message {
            held.lock().unwrap().push(reply);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_router_that_does_not_answer_gets_the_busy_reply_in_time() {
    let key = signing_key();
    let held = Held::default();
    let (router, _) = Actor::spawn(None, StalledRouter, held.clone())
        .await
        .unwrap();
    let verifier = interactions::verifier(&public_key_hex(&key)).unwrap();
    let endpoint = Arc::new(OnceLock::new());
    let metrics = Arc::new(Metrics::new());
    let _ = endpoint
        .set(InteractionsEndpoint::new(verifier, router.clone()).with_metrics(metrics.clone()));
    let routes = Routes::new()
        .probes(Arc::new(Health::new(metrics.clone())))
        .interactions(endpoint);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(
        Server::new(routes, HttpSettings::default(), metrics.clone()).serve(listener, stopped),
    );
    let client = fresh_client();

    let payload = interaction_payload(
        901,
        "token-901",
        77,
        USER,
        "ずんだユーザー",
        "混んでるのだ?",
    )
    .to_string();
    let headers = signed(&key, unix_now(), &payload);
    let started = Instant::now();
    let ((status, body), probe) = tokio::join!(
        post(&client, addr, "/interactions", &headers, payload),
        async {
            // Probes never wait on the event actor.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let answer = get(&client, addr, "/").await;
            (answer, started.elapsed())
        }
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["type"], 4);
    assert_eq!(response["data"]["content"], BUSY_REPLY);
    assert_eq!(
        response["data"]["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    assert!(took < Duration::from_secs(3), "busy reply after {took:?}");
    assert!(
        took >= interactions::BUDGET - Duration::from_millis(100),
        "the event actor was given its budget: {took:?}"
    );
    assert_eq!(probe.0, (200, "ack".to_owned()));
    assert!(probe.1 < Duration::from_secs(1), "probe took {:?}", probe.1);

    // The request reached the event actor, and its reply port is closed: the actor sees the
    // request gone and starts no answer behind the busy reply.
    {
        let held = held.lock().unwrap();
        assert_eq!(held.len(), 1);
        assert!(held[0].is_closed());
    }
    assert!(metrics
        .render(&Default::default())
        .contains("zundamon_replies_total{kind=\"busy\"} 1"));
    router.stop(None);
}

/// Starts the real server in process with short limits, a stalled event actor behind
/// `POST /interactions`.
async fn small_server(settings: HttpSettings) -> (SocketAddr, ActorRef<RouterMsg>) {
    let key = signing_key();
    let (router, _) = Actor::spawn(None, StalledRouter, Held::default())
        .await
        .unwrap();
    let verifier = interactions::verifier(&public_key_hex(&key)).unwrap();
    let endpoint = Arc::new(OnceLock::new());
    let _ = endpoint.set(InteractionsEndpoint::new(verifier, router.clone()));
    let metrics = Arc::new(Metrics::new());
    let routes = Routes::new()
        .probes(Arc::new(Health::new(metrics.clone())))
        .interactions(endpoint);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        Server::new(routes, settings, metrics)
            .serve(listener, stopped)
            .await;
        drop(stop);
    });
    (addr, router)
}

/// Sends `bytes` (ignoring a reset once the server has had enough) and returns what the server
/// answered before closing, and how long it took to close.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the connection");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_cut_off() {
    let settings = HttpSettings {
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_connections: 16,
    };
    let (addr, router) = small_server(settings).await;

    // A connection that never sends anything is closed after the idle timeout.
    let (answer, took) = raw_exchange(addr, b"").await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        took < Duration::from_secs(4),
        "silent connection open {took:?}"
    );

    // A kept-alive connection is closed once it has been silent for the idle timeout.
    let (answer, took) = raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(4),
        "kept-alive connection open {took:?}"
    );

    // A head far larger than any real request is refused, not buffered.
    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let (answer, _) = raw_exchange(addr, &huge).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body larger than an interaction can be is refused unread.
    let mut big_body =
        b"POST /interactions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    big_body.extend(std::iter::repeat_n(b'{', 200 * 1024));
    let (answer, _) = raw_exchange(addr, &big_body).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A body that stops short gets 408 after the body timeout.
    let (answer, took) = raw_exchange(
        addr,
        b"POST /interactions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"type\":",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // Zero spacing: many connections opened at once, above the cap, all get an answer.
    let client = fresh_client();
    let answers = futures::future::join_all((0..64).map(|_| get(&client, addr, "/"))).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    router.stop(None);
}
