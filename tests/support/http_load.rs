//! Hostile and well-behaved HTTP clients for the bot's public port: connections that trickle
//! their headers one byte at a time, connections that hold a request body open, a client that
//! signs interactions like Discord, and resident-memory readings of the bot process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The key the tests sign interactions with, as Discord would.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// `DISCORD_PUBLIC_KEY` for [`signing_key`].
pub fn public_key_hex(key: &SigningKey) -> String {
    key.verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The headers of a request signed like Discord signs its interactions.
pub fn signed(key: &SigningKey, timestamp: u64, body: &str) -> Vec<(&'static str, String)> {
    let timestamp = timestamp.to_string();
    let signature = key.sign(format!("{timestamp}{body}").as_bytes());
    let hex: String = signature
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    vec![
        ("X-Signature-Ed25519", hex),
        ("X-Signature-Timestamp", timestamp),
        ("Content-Type", "application/json".to_owned()),
    ]
}

pub const PING: &str = r#"{"type":1,"id":"1","application_id":"2","token":"t","version":1}"#;

/// An HTTP client that opens a new connection for every request, like a platform's health
/// checker: no pooled connection for the server to have closed in between.
pub fn fresh_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The bot's resident memory in KiB (Linux), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The sockets the bot process holds open (Linux): its connections, listeners and upstreams.
pub fn open_sockets(pid: u32) -> Option<usize> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_link(entry.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

/// What the slow clients saw.
#[derive(Default)]
pub struct LoadReport {
    /// Connections opened (each closed one is replaced).
    pub opened: AtomicUsize,
    /// Connections the server ended (closed, or answered and closed).
    pub ended_by_server: AtomicUsize,
    /// The longest a trickling connection stayed open before the server ended it, in ms.
    pub longest_trickle_ms: AtomicU64,
    /// Connections that failed to connect (e.g. refused at the TCP level).
    pub connect_failures: AtomicUsize,
    /// Status lines the body holders got back, e.g. `HTTP/1.1 408 Request Timeout`.
    pub body_statuses: Mutex<Vec<String>>,
    /// Connections open right now.
    pub open_now: AtomicUsize,
}

/// A running group of slow clients; `stop` ends them and waits.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pub report: Arc<LoadReport>,
}

impl SlowClients {
    /// `tricklers` connections that send a never-ending header one byte per `every`, and
    /// `holders` that send a `POST /interactions` head announcing a 1000-byte body, then one
    /// body byte per `every`. Each connection the server ends is replaced after `reconnect`
    /// (`every`: each client does one thing per tick, send a byte or reconnect; zero: a storm).
    pub fn start(
        addr: SocketAddr,
        tricklers: usize,
        holders: usize,
        every: Duration,
        reconnect: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(LoadReport::default());
        let mut tasks = Vec::new();
        for _ in 0..tricklers {
            tasks.push(tokio::spawn(trickle(
                addr,
                every,
                reconnect,
                false,
                stop.clone(),
                report.clone(),
            )));
        }
        for _ in 0..holders {
            tasks.push(tokio::spawn(trickle(
                addr,
                every,
                reconnect,
                true,
                stop.clone(),
                report.clone(),
            )));
        }
        SlowClients {
            stop,
            tasks,
            report,
        }
    }

    pub async fn stop(self) -> Arc<LoadReport> {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            let _ = task.await;
        }
        self.report
    }
}

async fn trickle(
    addr: SocketAddr,
    every: Duration,
    reconnect: Duration,
    body: bool,
    stop: Arc<AtomicBool>,
    report: Arc<LoadReport>,
) {
    // Spread the connections' byte times over the interval.
    tokio::time::sleep(every.mul_f64(rand_fraction())).await;
    while !stop.load(Ordering::Acquire) {
        let stream = match tokio::time::timeout(every, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            _ => {
                report.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(every).await;
                continue;
            }
        };
        report.opened.fetch_add(1, Ordering::Relaxed);
        report.open_now.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        let mut pending: Vec<u8> = if body {
            b"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\nX-Signature-Ed25519: 00\r\nX-Signature-Timestamp: 0\r\n\r\n"
                .to_vec()
        } else {
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec()
        };
        // A body holder sends its head at once (the server then waits for the body); a
        // trickler sends everything a byte at a time.
        if body
            && writer
                .write_all(&std::mem::take(&mut pending))
                .await
                .is_err()
        {
            report.open_now.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let mut sent = 0usize;
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        let ended = loop {
            if stop.load(Ordering::Acquire) {
                break false;
            }
            let byte = pending.get(sent).copied().unwrap_or(b'a');
            if writer.write_all(&[byte]).await.is_err() {
                break true;
            }
            sent += 1;
            tokio::select! {
                read = reader.read(&mut buf) => {
                    if let Ok(n) = read {
                        answer.extend_from_slice(&buf[..n]);
                    }
                    break true;
                }
                () = tokio::time::sleep(every) => {}
            }
        };
        report.open_now.fetch_sub(1, Ordering::Relaxed);
        if !reconnect.is_zero() {
            tokio::time::sleep(reconnect).await;
        }
        if ended {
            report.ended_by_server.fetch_add(1, Ordering::Relaxed);
            if body {
                let status = String::from_utf8_lossy(&answer)
                    .lines()
                    .next()
                    .unwrap_or("(closed without an answer)")
                    .to_owned();
                report.body_statuses.lock().unwrap().push(status);
            } else {
                report
                    .longest_trickle_ms
                    .fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() % 1000) as f64 / 1000.0
}

/// Percentile (0–100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}
