//! One TLS connection's state: rustls's unbuffered server connection plus our own buffers.
//!
//! Why the unbuffered API: a buffered `rustls::ServerConnection` keeps a receive buffer of at
//! least 4 KiB for its whole life, and a tokio-rustls stream adds its own. Here an idle
//! connection holds no buffer at all: `incoming` and `outbox` are borrowed from a per-thread
//! pool while they hold bytes and handed back as soon as they are empty. That is most of how an
//! idle connection stays far below the 16 KiB budget (see the `tls` benchmark).
//!
//! The session never blocks and never does I/O itself except through [`Session::read_from`] and
//! [`Session::flush_to`], which use a socket's non-blocking `try_read`/`try_write`.

use std::cell::RefCell;
use std::io;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// Bytes asked of the socket per read: one full TLS record plus its header and tag, so a bulk
/// sender's records are taken whole.
const READ_CHUNK: usize = 16 * 1024 + 512;

/// A buffer that is returned to a per-thread pool of one when dropped empty: the common case of
/// "read, process everything, nothing left" then allocates nothing.
#[derive(Debug, Default)]
pub struct PooledBuf {
    bytes: Vec<u8>,
}

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare buffers kept per thread: enough for the read and write buffers of the one connection
/// the thread is working on at any moment.
const SPARES: usize = 2;

impl PooledBuf {
    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Makes room for `additional` more bytes, taking a spare buffer if it has none.
    fn reserve(&mut self, additional: usize) {
        if additional == 0 {
            // An empty buffer must stay unallocated: idle connections hold nothing.
            return;
        }
        if self.bytes.capacity() == 0 {
            if let Some(spare) = SPARE.with(|s| s.borrow_mut().pop()) {
                self.bytes = spare;
            }
        }
        self.bytes.reserve(additional);
    }

    /// Appends bytes.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.bytes.extend_from_slice(data);
    }

    /// Appends `len` bytes written by `fill` into the new room; `fill` returns how many it
    /// wrote, and only those are kept.
    pub fn append_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) {
        self.reserve(len);
        let start = self.bytes.len();
        self.bytes.resize(start + len, 0);
        let written = fill(&mut self.bytes[start..]).min(len);
        self.bytes.truncate(start + written);
        if self.bytes.is_empty() {
            self.release();
        }
    }

    /// Removes `n` bytes from the front; gives the buffer back to the pool when it empties.
    pub fn consume(&mut self, n: usize) {
        if n >= self.bytes.len() {
            self.bytes.clear();
            self.release();
        } else if n > 0 {
            self.bytes.drain(..n);
        }
    }

    fn release(&mut self) {
        if self.bytes.capacity() == 0 {
            return;
        }
        let buf = std::mem::take(&mut self.bytes);
        // Oversized buffers (a burst of large replies) go back to the allocator.
        if buf.capacity() <= 4 * READ_CHUNK {
            SPARE.with(|s| {
                let mut spare = s.borrow_mut();
                if spare.len() < SPARES {
                    spare.push(buf);
                }
            });
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.bytes.clear();
        self.release();
    }
}

/// What [`Session::process`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything received has been processed; read more from the socket.
    NeedInput,
    /// The sink refused plaintext: it is kept in the session until [`Session::process`] is
    /// called again. Stop reading the socket until the sink has room.
    SinkFull,
    /// The client sent close_notify: no more data will come from it.
    PeerClosed,
    /// Both sides have closed.
    Closed,
}

/// Where decrypted application data goes: takes a prefix of the bytes offered and says how
/// many it took.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> usize;

/// A TLS connection's protocol state and buffers.
pub struct Session {
    /// Boxed: it is over a kilobyte, and a session moves from the handshake to its route; a
    /// pointer keeps the connection's task future small (every byte of it is per connection).
    conn: Box<UnbufferedServerConnection>,
    /// The config `conn` runs with (a fresh connection replaces `conn` when its keys are taken
    /// to send our own alert).
    config: std::sync::Arc<rustls::ServerConfig>,
    /// rustls reported a fatal error (or we sent our own fatal alert): it is not called again,
    /// except to collect the alert it queued.
    failed: bool,
    /// Ciphertext received and not yet consumed by rustls.
    incoming: PooledBuf,
    /// Ciphertext produced and not yet written to the socket.
    outbox: PooledBuf,
    /// Plaintext decrypted but not taken by the sink (at most a record or two: while it is
    /// non-empty the socket is not read).
    pending: PooledBuf,
    peer_closed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("incoming", &self.incoming.len())
            .field("outbox", &self.outbox.len())
            .field("pending", &self.pending.len())
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

/// What one call to rustls asked of us, after handling it.
enum Step {
    Again,
    Stop(Progress),
    WroteAppData,
}

impl Session {
    /// A new server-side session.
    pub fn new(config: std::sync::Arc<rustls::ServerConfig>) -> Result<Session, rustls::Error> {
        Ok(Session {
            conn: Box::new(UnbufferedServerConnection::new(config.clone())?),
            config,
            failed: false,
            incoming: PooledBuf::default(),
            outbox: PooledBuf::default(),
            pending: PooledBuf::default(),
            peer_closed: false,
        })
    }

    /// Replaces the rustls connection with a fresh one on `config`. Only before the first
    /// [`Session::process`]: the bytes received so far stay and go to the new connection.
    pub fn restart(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<(), rustls::Error> {
        debug_assert!(self.outbox.is_empty() && self.pending.is_empty());
        *self.conn = UnbufferedServerConnection::new(config.clone())?;
        self.config = config;
        Ok(())
    }

    /// The rustls connection, for ALPN, client certificates and the like.
    pub fn conn(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Bytes received and not yet processed.
    pub fn incoming(&self) -> &[u8] {
        self.incoming.as_slice()
    }

    /// Whether ciphertext is waiting to be written to the socket.
    pub fn wants_write(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Ciphertext waiting to be written.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether refused plaintext is waiting for the sink.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops the ciphertext waiting to be written (a client that does not read it is closed
    /// without it), and gives its buffer back.
    pub fn discard_outbox(&mut self) {
        self.outbox.consume(self.outbox.len());
    }

    /// Appends raw bytes to the outbox, unencrypted: only for the alert sent before any
    /// handshake (see `clienthello`).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.outbox.extend_from_slice(bytes);
    }

    /// Reads what the socket has (one non-blocking read). `Ok(0)` is end of stream.
    pub fn read_from(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let buf = &mut self.incoming;
        buf.reserve(READ_CHUNK);
        let start = buf.bytes.len();
        buf.bytes.resize(start + READ_CHUNK, 0);
        let result = read(&mut buf.bytes[start..]);
        let got = *result.as_ref().unwrap_or(&0);
        buf.bytes.truncate(start + got);
        if buf.bytes.is_empty() {
            buf.release();
        }
        result
    }

    /// Writes as much of the outbox as the socket takes. Returns whether it is now empty.
    pub fn flush_to(&mut self, write: impl Fn(&[u8]) -> io::Result<usize>) -> io::Result<bool> {
        while !self.outbox.is_empty() {
            match write(self.outbox.as_slice()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outbox.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Runs rustls over the received bytes: handshake messages are answered (into the outbox),
    /// application data is offered to `sink`, which returns how many bytes it took (what it
    /// leaves is kept and offered again on the next call). Returns when more input is needed,
    /// the sink is full, or the peer closed.
    pub fn process(&mut self, sink: Sink<'_>) -> Result<Progress, rustls::Error> {
        if self.failed {
            return Ok(Progress::Closed);
        }
        if !self.conn.is_handshaking() && oversized_record(&self.incoming, self.record_limit()) {
            self.send_record_overflow();
            return Err(rustls::Error::PeerSentOversizedRecord);
        }
        if !self.pending.is_empty() {
            let taken = sink(self.pending.as_slice());
            self.pending.consume(taken);
            if !self.pending.is_empty() {
                return Ok(Progress::SinkFull);
            }
        }
        let mut sink = Some(sink);
        loop {
            match self.step(None, &mut sink)? {
                Step::Again => continue,
                Step::Stop(progress) => return Ok(progress),
                Step::WroteAppData => unreachable!("no application data was given"),
            }
        }
    }

    /// Encrypts `plaintext` into the outbox. Only after the handshake. Plaintext that arrives
    /// from the client meanwhile is kept for the next [`Session::process`].
    pub fn write(&mut self, plaintext: &[u8]) -> Result<(), rustls::Error> {
        if plaintext.is_empty() {
            return Ok(());
        }
        if self.failed {
            return Err(rustls::Error::General("write after a fatal error".into()));
        }
        for _ in 0..64 {
            match self.step(Some(plaintext), &mut None)? {
                Step::WroteAppData => return Ok(()),
                Step::Again => continue,
                Step::Stop(Progress::Closed) => {
                    return Err(rustls::Error::General("write after close".into()))
                }
                Step::Stop(_) => {
                    return Err(rustls::Error::General(
                        "write before the handshake completed".into(),
                    ))
                }
            }
        }
        Err(rustls::Error::General(
            "rustls did not offer to encrypt".into(),
        ))
    }

    /// Queues close_notify. Idempotent; nothing after a fatal error (its alert ended the
    /// connection).
    pub fn close(&mut self) {
        if self.failed {
            return;
        }
        for _ in 0..64 {
            match self.step(Some(&[]), &mut None) {
                Ok(Step::Again) => continue,
                _ => return,
            }
        }
    }

    /// After a protocol error: collects the fatal alert rustls queued so it can be sent.
    pub fn queue_alert_after_error(&mut self) {
        for _ in 0..8 {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut []);
            let _ = discard;
            match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    encode_into(&mut self.outbox, |b| enc.encode(b))
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }

    /// One call into rustls, and the handling of the state it returns.
    ///
    /// `write`: `Some(data)` to encrypt data (empty: close_notify) when rustls allows it.
    fn step(
        &mut self,
        write: Option<&[u8]>,
        sink: &mut Option<Sink<'_>>,
    ) -> Result<Step, rustls::Error> {
        let UnbufferedStatus { discard, state } =
            self.conn.process_tls_records(&mut self.incoming.bytes);
        let step = match state {
            Err(e) => {
                // rustls queued its fatal alert; calling it again on the same bytes would make
                // it send a second one.
                self.failed = true;
                self.incoming.consume(discard);
                return Err(e);
            }
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    let taken = match sink {
                        Some(sink) if self.pending.is_empty() => sink(record.payload),
                        _ => 0,
                    };
                    if taken < record.payload.len() {
                        self.pending.extend_from_slice(&record.payload[taken..]);
                    }
                }
                if self.pending.is_empty() {
                    Step::Again
                } else if sink.is_some() {
                    Step::Stop(Progress::SinkFull)
                } else {
                    Step::Again
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                encode_into(&mut self.outbox, |b| enc.encode(b));
                Step::Again
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // The outbox keeps order, so queued is as good as sent.
                transmit.done();
                Step::Again
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match write {
                Some([]) => {
                    encrypt_into(&mut self.outbox, 64, |b| traffic.queue_close_notify(b))?;
                    Step::WroteAppData
                }
                Some(data) => {
                    // Per record: 5 header bytes, a content-type byte and a 16-byte tag.
                    let estimate = data.len() + (data.len() / (16 * 1024) + 1) * 32;
                    encrypt_into(&mut self.outbox, estimate, |b| traffic.encrypt(data, b))?;
                    Step::WroteAppData
                }
                None if self.peer_closed => Step::Stop(Progress::PeerClosed),
                None => Step::Stop(Progress::NeedInput),
            },
            Ok(ConnectionState::BlockedHandshake) => Step::Stop(Progress::NeedInput),
            Ok(ConnectionState::PeerClosed) => {
                self.peer_closed = true;
                if write.is_some() {
                    Step::Again
                } else {
                    Step::Stop(Progress::PeerClosed)
                }
            }
            Ok(ConnectionState::Closed) => Step::Stop(Progress::Closed),
            Ok(ConnectionState::ReadEarlyData(_)) => {
                // max_early_data_size is 0: rustls rejects 0-RTT before we get here.
                self.incoming.consume(discard);
                return Err(rustls::Error::General("unexpected early data".into()));
            }
            Ok(_) => Step::Stop(Progress::NeedInput),
        };
        self.incoming.consume(discard);
        Ok(step)
    }
}

impl Session {
    /// The largest TLSCiphertext length the negotiated version allows: 2^14 + 256 in TLS 1.3
    /// (RFC 8446 section 5.2), 2^14 + 2048 in TLS 1.2 (RFC 5246 section 6.2.3).
    fn record_limit(&self) -> usize {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => (1 << 14) + 2048,
            _ => (1 << 14) + 256,
        }
    }

    /// Ends the connection with an encrypted fatal `record_overflow` alert, as RFC 8446 section
    /// 5.2 requires for a record over the limit. rustls answers some oversized records with
    /// `decode_error` (over its buffer's 2^14 + 2048) or `bad_record_mac` (it tries to decrypt
    /// them first), and offers no call to send a chosen alert, so the alert is sealed here with
    /// the connection's own keys and sequence number, taken from rustls (the connection is
    /// over). Without the keys (a suite rustls cannot export), the connection just ends.
    fn send_record_overflow(&mut self) {
        self.failed = true;
        let fresh = match UnbufferedServerConnection::new(self.config.clone()) {
            Ok(fresh) => fresh,
            Err(_) => return,
        };
        let conn = std::mem::replace(&mut *self.conn, fresh);
        let suite = conn.negotiated_cipher_suite();
        let Ok((secrets, _)) = conn.dangerous_into_kernel_connection() else {
            return;
        };
        let (seq, keys) = secrets.tx;
        if let Some(record) = seal_alert(suite, keys, seq, RECORD_OVERFLOW) {
            self.outbox.extend_from_slice(&record);
        }
    }
}

/// A fatal `record_overflow` alert: level 2, description 22.
const RECORD_OVERFLOW: [u8; 2] = [2, 22];

/// Encrypts a fatal alert as the record after `seq` records written with `keys`.
fn seal_alert(
    suite: Option<rustls::SupportedCipherSuite>,
    keys: rustls::ConnectionTrafficSecrets,
    seq: u64,
    alert: [u8; 2],
) -> Option<Vec<u8>> {
    use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
    use rustls::ConnectionTrafficSecrets as Keys;
    let (key, iv) = match keys {
        Keys::Aes128Gcm { key, iv }
        | Keys::Aes256Gcm { key, iv }
        | Keys::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => return None,
    };
    let mut encrypter = match suite? {
        rustls::SupportedCipherSuite::Tls13(suite) => suite.aead_alg.encrypter(key, iv),
        rustls::SupportedCipherSuite::Tls12(suite) => {
            // The exported IV is the fixed part then the explicit nonce (GCM), or all fixed.
            let fixed = suite.aead_alg.key_block_shape().fixed_iv_len;
            let iv = iv.as_ref();
            suite.aead_alg.encrypter(key, &iv[..fixed], &iv[fixed..])
        }
    };
    let message = OutboundPlainMessage {
        typ: rustls::ContentType::Alert,
        version: rustls::ProtocolVersion::TLSv1_2,
        payload: OutboundChunks::Single(&alert),
    };
    encrypter.encrypt(message, seq).ok().map(|m| m.encode())
}

/// Whether a complete record header in `incoming` announces more than `limit` bytes.
fn oversized_record(incoming: &PooledBuf, limit: usize) -> bool {
    let bytes = incoming.as_slice();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > limit {
            return true;
        }
        at += 5 + len;
    }
    false
}

/// Appends what `encode` writes, growing the buffer as rustls asks.
fn encode_into(
    out: &mut PooledBuf,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) {
    let mut room = 4096;
    loop {
        let start = out.bytes.len();
        out.reserve(room);
        out.bytes.resize(start + room, 0);
        match encode(&mut out.bytes[start..]) {
            Ok(n) => {
                out.bytes.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(e)) => {
                out.bytes.truncate(start);
                room = e.required_size;
            }
            Err(EncodeError::AlreadyEncoded) => {
                out.bytes.truncate(start);
                return;
            }
        }
    }
}

/// Appends what `encrypt` writes, growing the buffer as rustls asks.
fn encrypt_into(
    out: &mut PooledBuf,
    estimate: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let mut room = estimate;
    for _ in 0..4 {
        let start = out.bytes.len();
        out.reserve(room);
        out.bytes.resize(start + room, 0);
        match encrypt(&mut out.bytes[start..]) {
            Ok(n) => {
                out.bytes.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) => {
                out.bytes.truncate(start);
                room = e.required_size;
            }
            Err(e) => {
                out.bytes.truncate(start);
                return Err(rustls::Error::General(e.to_string()));
            }
        }
    }
    Err(rustls::Error::General(
        "encryption buffer did not converge".into(),
    ))
}
