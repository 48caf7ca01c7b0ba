//! The control socket: `<runtime dir>/control.sock`, mode 0660 (the daemon's user and group),
//! where `edgegw reload`, `edgegw status` and `edgegw metrics` ask the running daemon.
//!
//! The protocol is one request line, one answer, then the daemon closes the connection. A
//! request is a word (`reload`, `status`, `metrics`; debug builds also take `stall-tls-thread
//! SECONDS`); the answer is one JSON object on one line: `{"ok":true,...}` or
//! `{"ok":false,"error":"..."}`. A client gets [`REQUEST_TIMEOUT`] to send its line of at most
//! [`MAX_REQUEST`] bytes; garbage, an overlong line or silence gets an error answer (if it
//! still reads) and the connection closed. At most [`MAX_CLIENTS`] are served at once; more are
//! closed at once. Each client is its own task, so none of this touches the control loop, which
//! only sees well-formed requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::accept::accept_bounded;
use super::requests::{Request, RequestSender};

/// The control socket's file name in the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 8;
/// How long a client has to read its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket, bound. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `<runtime>/control.sock` (a stale socket left by a daemon that died is replaced;
    /// a live one is an error) with mode 0660.
    pub fn bind(runtime: &Path) -> Result<ControlServer> {
        let path = runtime.join(SOCKET_NAME);
        if std::fs::symlink_metadata(&path).is_ok() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                anyhow::bail!(
                    "{}: another edgegw is running with this runtime directory",
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("remove the stale control socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("bind the control socket {}", path.display()))?;
        crate::sys::restrict_to(&path, &[], &[])
            .with_context(|| format!("set the mode of {}", path.display()))?;
        Ok(ControlServer { listener, path })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients until the runtime stops; each one's requests go to `requests`.
    pub async fn serve(self, requests: RequestSender) {
        accept_bounded(
            "control socket",
            MAX_CLIENTS,
            || self.listener.accept(),
            |stream| {
                let requests = requests.clone();
                async move { serve_client(stream, &requests).await }
            },
        )
        .await;
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_client(mut stream: UnixStream, requests: &RequestSender) {
    let answer = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut stream)).await {
        Ok(Ok(line)) => answer(&line, requests).await,
        Ok(Err(e)) => refusal(&e),
        Err(_) => refusal("no request within 2 s"),
    };
    let mut text = answer.to_string();
    text.push('\n');
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, stream.write_all(text.as_bytes())).await;
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes.
async fn read_line(stream: &mut UnixStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the request ended without a newline".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| "the request is not UTF-8".into());
        }
        if buf.len() >= MAX_REQUEST {
            return Err(format!("a request line is at most {MAX_REQUEST} bytes"));
        }
    }
}

fn refusal(error: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": error })
}

/// Asks the control loop and waits for its answer.
async fn answer(line: &str, requests: &RequestSender) -> serde_json::Value {
    let mut words = line.split_whitespace();
    let (Some(verb), rest) = (words.next(), words.collect::<Vec<_>>()) else {
        return refusal("empty request");
    };
    let gone = || refusal("the daemon is stopping");
    match (verb, rest.as_slice()) {
        ("reload", []) => {
            let (tx, rx) = oneshot::channel();
            if !requests.send(Request::Reload(Some(tx))) {
                return gone();
            }
            match rx.await {
                Ok(Ok(reloaded)) => serde_json::json!({
                    "ok": true,
                    "listening": reloaded.listening.iter().map(|l| serde_json::json!({
                        "listener": l.listener, "addr": l.addr.to_string(),
                    })).collect::<Vec<_>>(),
                }),
                Ok(Err(e)) => refusal(&e.to_string()),
                Err(_) => gone(),
            }
        }
        ("status", []) => {
            let (tx, rx) = oneshot::channel();
            if !requests.send(Request::Status(tx)) {
                return gone();
            }
            match rx.await {
                Ok(status) => serde_json::json!({ "ok": true, "status": status }),
                Err(_) => gone(),
            }
        }
        ("metrics", []) => {
            let (tx, rx) = oneshot::channel();
            if !requests.send(Request::Metrics(tx)) {
                return gone();
            }
            match rx.await {
                Ok(text) => serde_json::json!({ "ok": true, "metrics": text }),
                Err(_) => gone(),
            }
        }
        #[cfg(any(debug_assertions, feature = "stall-trigger"))]
        ("stall-tls-thread", [seconds]) => match seconds.parse::<u64>() {
            Ok(s) if s <= 3600 => {
                if !requests.send(Request::StallTlsThread(Duration::from_secs(s))) {
                    return gone();
                }
                serde_json::json!({ "ok": true })
            }
            _ => refusal("stall-tls-thread takes a number of seconds up to 3600"),
        },
        _ => refusal(&format!(
            "unknown request `{}`: reload, status or metrics",
            line.escape_debug()
        )),
    }
}

/// Asks the daemon whose runtime directory is `runtime` and returns its answer (the client side,
/// for `edgegw reload`, `status` and `metrics`). `Err` when it cannot be asked or said no.
pub fn ask(runtime: &Path, request: &str, timeout: Duration) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let path = runtime.join(SOCKET_NAME);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "connect to {} (is edgegw running with this runtime directory?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .context("send the request")?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("read the daemon's answer to `{request}`"))?;
    let answer: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("the daemon's answer is not JSON: {line:?}"))?;
    if answer["ok"] != serde_json::Value::Bool(true) {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("{error}");
    }
    Ok(answer)
}
