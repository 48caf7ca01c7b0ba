//! The events ring: the daemon's kernel events, as records for consumers
//! (`edgegw_proto::events`), so a consumer learns of network changes, resyncs, consumer
//! departures, reloads and load shedding without netlink or inotify code of its own.
//!
//! It is a ring like the others (memfd, attach socket `<runtime dir>/rings/<name>.sock`, the
//! same attach protocol), with no reply direction, produced by the control plane. The daemon
//! never waits for it: a record that does not fit is dropped and counted, and the next one that
//! fits carries `LOST_BEFORE`.

use std::os::fd::{AsFd, OwnedFd};
use std::task::Poll;

use anyhow::{Context, Result};
use edgegw_proto::events::{encode_event, EventKind, EVENT, EVENT_HEADER_LEN, LOST_BEFORE};
use edgegw_ring::{AllowList, Producer, RingConfig as RingLayout, RingServer};
use tokio::io::unix::AsyncFd;

use crate::config::EventsConfig;
use crate::paths::Dirs;

/// The events ring, its attach server, and the records' numbering.
#[derive(Debug)]
pub struct EventsRing {
    name: String,
    capacity: usize,
    producer: Producer,
    server: RingServer,
    ready: AsyncFd<OwnedFd>,
    seq: u64,
    /// Records dropped since the last one written.
    lost: bool,
    /// Records written and dropped, for the status.
    pub written: u64,
    /// See `written`.
    pub dropped: u64,
}

impl EventsRing {
    /// Creates the ring `config` names and its attach socket (the daemon's user may attach).
    pub fn create(config: &EventsConfig, name: &str, dirs: &Dirs) -> Result<EventsRing> {
        let producer = Producer::create(RingLayout::with_capacity(config.capacity))
            .with_context(|| format!("events ring `{name}`: create"))?;
        let server = RingServer::bind(
            dirs.ring_socket(name),
            producer.served_ring()?,
            AllowList::current_user(),
        )
        .with_context(|| format!("events ring `{name}`: serve"))?;
        // 0660 like the other rings' sockets (the bind left the umask's mode); the allow list
        // then admits the daemon's user only.
        crate::sys::restrict_to(server.path(), &[], &[])
            .with_context(|| format!("events ring `{name}`: set the mode of its socket"))?;
        let fd = server
            .as_fd()
            .try_clone_to_owned()
            .context("duplicate the events ring server's epoll fd")?;
        let ready = crate::sys::async_fd(fd).context("register the events ring server")?;
        log::info!(
            "events ring `{name}`: {} bytes; consumers attach at {}",
            config.capacity,
            server.path().display()
        );
        Ok(EventsRing {
            name: name.to_string(),
            capacity: config.capacity,
            producer,
            server,
            ready,
            seq: 0,
            lost: false,
            written: 0,
            dropped: 0,
        })
    }

    /// Whether this is the ring `config` asks for.
    pub fn is(&self, config: &EventsConfig) -> bool {
        config.ring.as_deref() == Some(self.name.as_str()) && config.capacity == self.capacity
    }

    /// Writes one event, or drops it if the ring is full.
    pub fn publish(&mut self, kind: EventKind, json: &serde_json::Value) {
        self.seq += 1;
        let json = json.to_string();
        let flags = if self.lost { LOST_BEFORE } else { 0 };
        let len = EVENT_HEADER_LEN + json.len();
        match self.producer.reserve(len, EVENT, 0) {
            Ok(out) => {
                encode_event(out, self.seq, kind, flags, &json);
                self.producer.publish();
                self.lost = false;
                self.written += 1;
            }
            Err(e) => {
                if !self.lost {
                    log::warn!("events ring `{}`: full, dropping events ({e})", self.name);
                }
                self.lost = true;
                self.dropped += 1;
            }
        }
    }

    /// Waits until the attach server has work.
    pub async fn ready(&mut self) {
        std::future::poll_fn(|cx| match self.ready.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// Serves attach requests.
    pub fn serve(&mut self) {
        match self.server.process() {
            Ok(events) => {
                for event in events {
                    log::info!("events ring `{}`: {event:?}", self.name);
                }
            }
            Err(e) => log::warn!("events ring `{}`: attach server: {e}", self.name),
        }
    }
}
