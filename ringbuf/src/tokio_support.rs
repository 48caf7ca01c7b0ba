//! Async readiness for tokio (feature `tokio`): the server's epoll fd and the ring eventfds
//! wrapped in `AsyncFd`, with the arm-then-recheck protocol done for you. Needs a runtime with
//! I/O enabled (a `current_thread` runtime is enough).

use crate::sys::tokio_fd::readable;
use crate::{Consumer, Error, Producer, Result, RingServer, ServerEvent};
use std::os::fd::{AsFd, OwnedFd};
use tokio::io::unix::AsyncFd;

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

/// A [`RingServer`] driven by tokio.
#[derive(Debug)]
pub struct AsyncRingServer {
    inner: AsyncFd<RingServer>,
}

impl AsyncRingServer {
    /// Register the server with the current runtime.
    pub fn new(server: RingServer) -> Result<Self> {
        let inner = readable(server).map_err(io_err("register ring server"))?;
        Ok(AsyncRingServer { inner })
    }

    /// Wait until the server has handled something, and return what happened.
    pub async fn events(&mut self) -> Result<Vec<ServerEvent>> {
        loop {
            let mut guard = self
                .inner
                .readable_mut()
                .await
                .map_err(io_err("ring server readiness"))?;
            let events = guard.get_inner_mut().process()?;
            // Readiness is edge-triggered: clear it only when nothing is left (process() bounds
            // its work per call).
            if !guard.get_inner().has_pending_work() {
                guard.clear_ready();
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// The server.
    pub fn get_ref(&self) -> &RingServer {
        self.inner.get_ref()
    }
}

/// Waits asynchronously for a consumer's data eventfd.
#[derive(Debug)]
pub struct DataReadiness {
    fd: AsyncFd<OwnedFd>,
}

impl DataReadiness {
    /// Register (a duplicate of) `consumer`'s data eventfd with the current runtime.
    pub fn new(consumer: &Consumer) -> Result<Self> {
        let fd = consumer
            .data_fd()
            .try_clone_to_owned()
            .map_err(io_err("dup data eventfd"))?;
        let fd = readable(fd).map_err(io_err("register data eventfd"))?;
        Ok(DataReadiness { fd })
    }

    /// Return when `consumer` has a record to read or its ring is finished. Never misses a
    /// publish: it arms the consumer's sleep word, re-checks, and only then awaits the eventfd.
    pub async fn wait(&self, consumer: &mut Consumer) -> Result<()> {
        loop {
            match consumer.prepare_wait() {
                Ok(false) | Err(crate::Error::Finished) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(e),
            }
            let ready = self.fd.readable().await;
            consumer.finish_wait();
            let mut guard = ready.map_err(io_err("data eventfd readiness"))?;
            guard.clear_ready();
            if consumer.has_data()? || consumer.is_finished()? {
                return Ok(());
            }
        }
    }
}

/// Waits asynchronously for a producer's space eventfd (the backpressure policy).
#[derive(Debug)]
pub struct SpaceReadiness {
    fd: AsyncFd<OwnedFd>,
}

impl SpaceReadiness {
    /// Register (a duplicate of) `producer`'s space eventfd with the current runtime.
    pub fn new(producer: &Producer) -> Result<Self> {
        let fd = producer
            .space_fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("dup space eventfd"))?;
        let fd = readable(fd).map_err(io_err("register space eventfd"))?;
        Ok(SpaceReadiness { fd })
    }

    /// Return when a record of `len` payload bytes fits.
    pub async fn wait(&self, producer: &mut Producer, len: usize) -> Result<()> {
        loop {
            if !producer.prepare_wait_for_space(len)? {
                return Ok(());
            }
            let ready = self.fd.readable().await;
            producer.finish_wait_for_space();
            let mut guard = ready.map_err(io_err("space eventfd readiness"))?;
            guard.clear_ready();
            if !producer.prepare_wait_for_space(len)? {
                return Ok(());
            }
            producer.finish_wait_for_space();
        }
    }
}
