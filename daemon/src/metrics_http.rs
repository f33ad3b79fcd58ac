//! The HTTP side of `[metrics]`: `GET /metrics` (and `HEAD`) answered with the exposition of
//! [`crate::metrics`]; 404 for any other path, 405 for any other method. One request per
//! connection, whose head must arrive within [`READ_TIMEOUT`] and fit in [`MAX_REQUEST`]
//! bytes; at most [`MAX_CONNECTIONS`] at once (more are closed unanswered), so a scraper gone
//! wrong or a port scan cannot pile up tasks or hold the control loop. HTTP/1.0 and 1.1 only:
//! a Prometheus scraper needs nothing more, and no web framework comes into the daemon for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::{Format, LazyScrape};

/// Largest request head accepted (request line and headers).
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the control loop has to answer for a scrape, and a client to take the answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// A scrape request to the control loop: it answers with the engines' state.
pub type ScrapeRequest = oneshot::Sender<LazyScrape>;

/// Binds `listen` and serves scrapes, asking the control loop through `tx` for each one.
pub async fn serve(
    listen: SocketAddr,
    tx: mpsc::Sender<ScrapeRequest>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
    tracing::info!(%listen, "metrics endpoint listening (GET /metrics)");
    Ok(spawn_server(listener, tx))
}

/// Serves scrapes on a bound `listener` (tests bind port 0).
pub fn spawn_server(
    listener: TcpListener,
    tx: mpsc::Sender<ScrapeRequest>,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%from, "metrics: too many connections, closing");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(stream, &tx).await {
                    tracing::debug!(%from, "metrics: {e:#}");
                }
                drop(permit);
            });
        }
    })
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// `GET /metrics`; `head`: a HEAD request (no body); the format the client accepts.
    Metrics {
        head: bool,
        format: Format,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads the request line of `head` (the bytes up to the blank line) and its `Accept` header.
/// The query string is ignored: Prometheus adds none, and others may.
pub fn parse_request(head: &[u8]) -> Ask {
    let Ok(text) = std::str::from_utf8(head) else {
        return Ask::BadRequest;
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ask::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Ask::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Ask::MethodNotAllowed,
    };
    let accept = text.split("\r\n").skip(1).find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| value.trim())
    });
    if path == "/metrics" {
        Ask::Metrics {
            head,
            format: Format::negotiate(accept),
        }
    } else {
        Ask::NotFound
    }
}

/// Reads up to the end of the request head. `Ok(None)`: too large.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await.context("reading request")?;
        if n == 0 {
            anyhow::bail!("connection closed before the request ended");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

fn response(status: &str, content_type: &str, body: &str, send_body: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET, HEAD\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if send_body {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// Asks the control loop for a scrape and encodes it.
async fn exposition(tx: &mpsc::Sender<ScrapeRequest>, format: Format) -> Result<String> {
    let (reply, answer) = oneshot::channel();
    tx.send(reply)
        .await
        .map_err(|_| anyhow::anyhow!("control loop gone"))?;
    let scrape = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .context("control loop did not answer in time")?
        .context("control loop dropped the scrape")?;
    // Joining and encoding a large hub's scrape is CPU work: off the loop and the async
    // workers.
    tokio::task::spawn_blocking(move || scrape().render(format))
        .await
        .context("encoder task")?
        .map_err(|_| anyhow::anyhow!("encoding the exposition failed"))
}

async fn connection(mut stream: TcpStream, tx: &mpsc::Sender<ScrapeRequest>) -> Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .context("request head not received in time")??;
    let text = "text/plain; charset=utf-8";
    let out = match head.as_deref().map(parse_request) {
        None => response(
            "431 Request Header Fields Too Large",
            text,
            "request too large\n",
            true,
        ),
        Some(Ask::Metrics { head, format }) => match exposition(tx, format).await {
            Ok(body) => response("200 OK", format.content_type(), &body, !head),
            Err(e) => {
                tracing::warn!("metrics: {e:#}");
                response("503 Service Unavailable", text, &format!("{e:#}\n"), !head)
            }
        },
        Some(Ask::NotFound) => response("404 Not Found", text, "only /metrics is served\n", true),
        Some(Ask::MethodNotAllowed) => {
            response("405 Method Not Allowed", text, "only GET and HEAD\n", true)
        }
        Some(Ask::BadRequest) => response("400 Bad Request", text, "bad request\n", true),
    };
    tokio::time::timeout(ANSWER_TIMEOUT, stream.write_all(&out))
        .await
        .context("client did not take the answer in time")??;
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a free loopback port whose "control loop" answers every scrape with the
    /// example reports (or, with `answer` false, is gone).
    async fn server(answer: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<ScrapeRequest>(4);
        if answer {
            tokio::spawn(async move {
                while let Some(reply) = rx.recv().await {
                    let scrape =
                        crate::metrics::tests::scrape(crate::metrics_events::Recorder::new());
                    let _ = reply.send(Box::new(move || scrape));
                }
            });
        } else {
            drop(rx);
        }
        (addr, spawn_server(listener, tx))
    }

    /// Sends `request` and reads the whole answer (the server closes after one). A connection
    /// closed unanswered (reset, since the request was not read) gives "".
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if c.write_all(request).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
            .await
            .expect("answered or closed in time");
        match read {
            Ok(_) => String::from_utf8(out).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                String::from_utf8(out).unwrap()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn serves_scrapes_and_refuses_the_rest() {
        let (addr, task) = server(true).await;
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains(&format!(
            "Content-Type: {}\r\n",
            crate::metrics::CONTENT_TYPE
        )));
        assert!(
            r.contains("dmvpn_sa_packets_total{") && r.ends_with("# EOF\n"),
            "{r}"
        );
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n").await;
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        let r = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        // Exactly the limit and no end of head (nothing left unread, so no reset hides the answer).
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        let r = exchange(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn a_scrape_without_a_control_loop_is_503() {
        let (addr, task) = server(false).await;
        let r = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn connections_are_capped() {
        let (addr, task) = server(true).await;
        // Idle connections that never send a request hold every slot...
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // ...(let the server accept them all)...
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so one more is closed unanswered.
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(r, "", "over the cap: closed without an answer");
        // Once they go, the slots are free again.
        drop(idle);
        let mut served = false;
        for _ in 0..50 {
            let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            if r.starts_with("HTTP/1.1 200 ") {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "slots freed when the idle clients left");
        task.abort();
    }

    #[test]
    fn request_lines() {
        let p = |s: &str| parse_request(s.as_bytes());
        let om = Format::OpenMetrics;
        let metrics = |head, format| Ask::Metrics { head, format };
        assert_eq!(p("GET /metrics HTTP/1.1\r\nHost: x"), metrics(false, om));
        assert_eq!(p("GET /metrics?x=1 HTTP/1.0"), metrics(false, om));
        assert_eq!(p("HEAD /metrics HTTP/1.1"), metrics(true, om));
        // What Prometheus sends, and what curl sends: OpenMetrics.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            p(&format!("GET /metrics HTTP/1.1\r\nAccept: {prom}")),
            metrics(false, om)
        );
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\naccept: */*"),
            metrics(false, om)
        );
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\nACCEPT: text/plain"),
            metrics(false, Format::Prometheus)
        );
        assert_eq!(p("GET / HTTP/1.1"), Ask::NotFound);
        assert_eq!(p("GET /metricsx HTTP/1.1"), Ask::NotFound);
        assert_eq!(p("POST /metrics HTTP/1.1"), Ask::MethodNotAllowed);
        assert_eq!(p("GET /metrics HTTP/2"), Ask::BadRequest);
        assert_eq!(p("GET /metrics"), Ask::BadRequest);
        assert_eq!(p("GET  /metrics HTTP/1.1"), Ask::BadRequest);
        assert_eq!(p("GET metrics HTTP/1.1"), Ask::BadRequest);
        assert_eq!(parse_request(&[0xff, 0xfe]), Ask::BadRequest);
        assert_eq!(p(""), Ask::BadRequest);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let ct = crate::metrics::CONTENT_TYPE;
        let r = String::from_utf8(response("200 OK", ct, "a\n", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains(&format!("Content-Type: {ct}\r\n")));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\na\n"));
        let h = String::from_utf8(response("200 OK", ct, "a\n", false)).unwrap();
        assert!(h.contains("Content-Length: 2\r\n") && h.ends_with("\r\n\r\n"));
        let m = String::from_utf8(response("405 Method Not Allowed", "t", "", true)).unwrap();
        assert!(m.contains("Allow: GET, HEAD\r\n"));
    }
}
