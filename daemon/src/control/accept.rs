//! The accept loop the control socket (`server.rs`) and the metrics endpoint (`http.rs`)
//! share: each client is a task of its own, at most a fixed number at once; more are closed at
//! once, and an accept error (EMFILE and the like) waits rather than spins.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Takes clients from `accept` (a listener's `accept`) until the task is dropped, each served
/// by `serve` on a task of its own while fewer than `max` are; a client over that is closed at
/// once. `what` names the listener in the log.
pub(super) async fn accept_bounded<A, S, Addr, C>(
    what: &str,
    max: usize,
    accept: impl Fn() -> A,
    serve: impl Fn(S) -> C,
) where
    A: Future<Output = io::Result<(S, Addr)>>,
    C: Future<Output = ()> + Send + 'static,
{
    let clients = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                log::warn!("{what}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if clients.load(Ordering::Relaxed) >= max {
            continue; // dropped: closed at once
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let clients = clients.clone();
        let client = serve(stream);
        tokio::spawn(async move {
            client.await;
            clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
