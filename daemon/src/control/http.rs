//! The optional metrics endpoint (`[metrics] listen`): `GET /metrics` over HTTP/1.1 on a TCP
//! port, answered with what `edgegw metrics` prints (Prometheus text format 0.0.4).
//!
//! A minimal responder on the control plane's runtime, not an HTTP server: each client gets
//! [`HEAD_TIMEOUT`] to send a request head of at most [`MAX_HEAD`] bytes; the answer is one
//! response with `Connection: close`, then the connection is closed. Anything else (a body, a
//! second request, garbage, silence) gets a 400 or is dropped. At most [`MAX_CLIENTS`] are
//! served at once, more are closed at once; each is a task of its own, so a slow one delays
//! nobody.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::accept::accept_bounded;
use super::requests::{Request, RequestSender};

/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head.
pub const MAX_HEAD: usize = 2048;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 4;
/// How long a client has to read its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint: bound where the config in force says, serving once the control loop runs.
#[derive(Debug, Default)]
pub struct Endpoint {
    addr: Option<SocketAddr>,
    /// The address it is bound to (port 0 in `addr` picks one).
    local: Option<SocketAddr>,
    bound: Option<TcpListener>,
    task: Option<JoinHandle<()>>,
    requests: Option<RequestSender>,
}

impl Endpoint {
    /// Binds `listen`, if there is one (the daemon does not start without its endpoint).
    pub fn bind(listen: Option<SocketAddr>) -> Result<Endpoint> {
        let mut endpoint = Endpoint::default();
        if let Some(addr) = listen {
            let listener = bind(addr)?;
            endpoint.local = listener.local_addr().ok();
            endpoint.bound = Some(listener);
            endpoint.addr = Some(addr);
        }
        Ok(endpoint)
    }

    /// Where it is bound, if anywhere.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Starts serving; its scrapes are answered through `requests`.
    pub fn serve(&mut self, requests: RequestSender) {
        if let Some(listener) = self.bound.take() {
            self.task = Some(tokio::spawn(serve(listener, requests.clone())));
        }
        self.requests = Some(requests);
    }

    /// A new config is in force: moves the endpoint to its `listen` if that changed. A port
    /// that cannot be bound now leaves the endpoint off, and says so.
    pub fn follow(&mut self, listen: Option<SocketAddr>) {
        if listen == self.addr {
            return;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.bound = None;
        self.addr = None;
        self.local = None;
        let Some(addr) = listen else {
            log::info!("metrics endpoint closed");
            return;
        };
        match bind(addr) {
            Ok(listener) => {
                self.addr = Some(addr);
                self.local = listener.local_addr().ok();
                self.bound = Some(listener);
                if let Some(requests) = self.requests.clone() {
                    self.serve(requests);
                }
            }
            Err(e) => log::error!("metrics endpoint off: {e:#}"),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let socket = std::net::TcpListener::bind(addr)
        .with_context(|| format!("bind the metrics endpoint {addr}"))?;
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket)?;
    log::info!(
        "metrics endpoint: http://{}/metrics",
        listener.local_addr()?
    );
    Ok(listener)
}

async fn serve(listener: TcpListener, requests: RequestSender) {
    accept_bounded(
        "metrics endpoint",
        MAX_CLIENTS,
        || listener.accept(),
        |stream| {
            let requests = requests.clone();
            async move { serve_client(stream, &requests).await }
        },
    )
    .await;
}

async fn serve_client(mut stream: TcpStream, requests: &RequestSender) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        // Silent, closed early or garbage past the limit: dropped.
        _ => return,
    };
    let response = match request_line(&head) {
        Some(("GET", "/metrics")) => {
            let (tx, rx) = oneshot::channel();
            if !requests.send(Request::Metrics(tx)) {
                return;
            }
            match rx.await {
                Ok(text) => response("200 OK", "text/plain; version=0.0.4; charset=utf-8", &text),
                Err(_) => return,
            }
        }
        Some(("GET", _)) => response("404 Not Found", "text/plain", "only /metrics\n"),
        Some(_) => response("405 Method Not Allowed", "text/plain", "only GET\n"),
        None => response("400 Bad Request", "text/plain", "not an HTTP/1.x request\n"),
    };
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads up to the blank line that ends a request head; `None` past [`MAX_HEAD`] bytes or if
/// the client closes first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

/// The method and path of an HTTP/1.x request line (a query string is ignored).
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn request_lines_are_http_1_with_a_method_and_a_path() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"GET / HTTP/2 extra\r\n\r\n"), None);
    }
}
