//! A route into a ring pair, one connection's side: its plaintext becomes DATA records in the
//! ingress ring (one per chunk, or one per length-prefixed frame), its replies come from the
//! queue the pair's reply task fills (`ring_pair`).
//!
//! A client's close_notify ends its direction only: the consumer gets CLOSE (reason 0) and may
//! still answer; the connection ends when the consumer sends CLOSE, the client goes away, or
//! the idle timeout passes; a consumer that speaks credits then gets a second CLOSE with the
//! reason it ended.

use std::rc::Rc;
use std::time::Duration;

use crate::config::Framing;
use crate::gateway::framing::Framer;
use crate::gateway::relay::{Backend, BackendError, Event, Interest, Read};
use crate::gateway::ring_pair::{RingConn, RingPair};
use edgegw_proto::{CloseReason, OpenInfo};

/// One connection's side of a ring pair.
pub(in crate::gateway) struct RingBackend {
    pair: Rc<RingPair>,
    conn: Rc<RingConn>,
    id: u64,
    /// Cuts length-prefixed frames; `None` for stream framing.
    framer: Option<Framer>,
    /// The CLOSE record is written (at the client's close_notify).
    close_sent: bool,
}

impl RingBackend {
    /// Announces the connection to the consumer (its OPEN record, which is never dropped: this
    /// waits for room, at most `wait` at a time). `None` if it waited in vain.
    pub(in crate::gateway) async fn open(
        pair: &Rc<RingPair>,
        id: u64,
        info: &OpenInfo,
        framing: Framing,
        wait: Duration,
    ) -> Option<RingBackend> {
        let conn = pair.open(id, info, wait).await?;
        Some(RingBackend {
            pair: pair.clone(),
            conn,
            id,
            framer: match framing {
                Framing::LengthPrefixed { max_frame } => Some(Framer::new(max_frame)),
                Framing::Stream => None,
            },
            close_sent: false,
        })
    }
}

impl Backend for RingBackend {
    fn offer(&mut self, plaintext: &[u8]) -> Result<usize, BackendError> {
        let (pair, conn) = (&self.pair, &*self.conn);
        match &mut self.framer {
            None => Ok(pair.offer_stream(conn, plaintext)),
            Some(framer) => Ok(framer.push(plaintext, &mut |frame| pair.offer_frame(conn, frame))?),
        }
    }

    fn flush(&mut self) {
        self.pair.publish();
    }

    fn close_write(&mut self, clean: bool) -> Option<CloseReason> {
        if !clean {
            return Some(CloseReason::ClientAborted);
        }
        self.pair.close(self.id, CloseReason::ClientClosed);
        self.close_sent = true;
        None
    }

    async fn ready(&mut self, interest: Interest) -> Event {
        // Whoever offered last was this connection (the thread runs one at a time): its refused
        // record's size is what it waits room for.
        let wanted = self.pair.refused_len();
        loop {
            if self.conn.closed_by_consumer() {
                // Its last replies go out first, then the end.
                return Event::Read;
            }
            if interest.read && self.conn.has_replies() {
                return Event::Read;
            }
            if !interest.read && self.conn.over_cap() {
                // It does not read its replies: drop it rather than hold the ring for it.
                return Event::Close(CloseReason::SlowClient);
            }
            if interest.offer {
                if self.conn.waits_for_credit() {
                    // The consumer has not granted more: its CREDIT wakes us. The client's
                    // TCP backs up meanwhile.
                } else if self.pair.room_or_wake(&self.conn, wanted) {
                    return Event::Offer;
                }
            }
            // Replies, the consumer's CLOSE, credit, or room.
            self.conn.woken().await;
        }
    }

    fn read(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), rustls::Error>,
    ) -> Result<Read, rustls::Error> {
        let taken = self.conn.take_replies(&self.pair, sink)?;
        Ok(if taken > 0 {
            Read::Data(taken)
        } else if self.conn.closed_by_consumer() {
            Read::End
        } else {
            Read::Nothing
        })
    }

    fn unsent(&mut self, bytes: usize) {
        self.conn.set_unsent(&self.pair, bytes);
    }

    fn finish(&mut self, reason: CloseReason) {
        self.pair.forget(self.id);
        // A consumer that speaks credits gets a last CLOSE even after reason 0 (the client's
        // close_notify), so it knows when to free the connection's state (PROTOCOL.md §3).
        if !self.close_sent || self.conn.credits_on() {
            self.pair.close(self.id, reason);
            self.close_sent = true;
        }
    }
}

impl Drop for RingBackend {
    fn drop(&mut self) {
        // Whatever it held no longer counts against the ring's reply budget, nor as a
        // connection with credits on.
        self.pair.forget(self.id);
        self.conn.end(&self.pair);
    }
}
