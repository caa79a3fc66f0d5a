//! `zundamon healthcheck`: probes the local `/healthz` over plain TCP, so a container's
//! `HEALTHCHECK` works in an image without curl or wget. Exit 0 when it answers 200, 1 otherwise
//! (Docker reserves 2).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The path probed: liveness, not readiness (a container reconnecting to Discord is still alive).
pub const PATH: &str = "/healthz";

/// Where to reach the health server of a bot bound to `bind_addr:port` from the same host: a
/// wildcard bind address is reached on loopback.
pub fn target(bind_addr: &str, port: u16) -> Result<SocketAddr, String> {
    let host = bind_addr.trim();
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = if ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            ip
        };
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host}: {err}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// GETs [`PATH`] at `addr`; `Ok` with the status line when it answers 200.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|err| format!("{addr}: {err}"))?;
    let request =
        format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: zundamon-healthcheck\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("{addr}: cannot send the probe: {err}"))?;
    // The status line is all we need; a short read is enough and bounds what a stranger on the
    // port could make us buffer.
    let mut head = [0u8; 256];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => {
                read += n;
                if head[..read].contains(&b'\n') {
                    break;
                }
            }
            Err(err) => return Err(format!("{addr}: no answer: {err}")),
        }
    }
    let text = String::from_utf8_lossy(&head[..read]);
    let status_line = text.lines().next().unwrap_or_default().trim().to_owned();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(status_line),
        _ if status_line.is_empty() => Err(format!("{addr}{PATH}: empty answer")),
        _ => Err(format!("{addr}{PATH}: {status_line}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer.as_bytes());
        });
        addr
    }

    #[test]
    fn wildcard_bind_is_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0", 8080).unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(target("::", 9).unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            target("127.0.0.2", 1).unwrap(),
            "127.0.0.2:1".parse().unwrap()
        );
    }

    #[test]
    fn only_a_200_is_healthy() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert!(probe(ok, Duration::from_secs(2)).is_ok());
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = probe(bad, Duration::from_secs(2)).unwrap_err();
        assert!(err.contains("503"), "{err}");
        let garbage = serve_once("SSH-2.0-OpenSSH 200\r\n");
        assert!(probe(garbage, Duration::from_secs(2)).is_err());
        let silent = serve_once("");
        assert!(probe(silent, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        assert!(probe(addr, Duration::from_secs(2)).is_err());
    }
}
