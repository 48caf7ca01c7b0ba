//! Reading the server name out of a ClientHello before rustls sees it.
//!
//! rustls answers a server name it has no certificate for with `access_denied`; RFC 6066 says
//! the alert is `unrecognized_name`, and a client (or an operator reading a packet capture)
//! deserves the right one. So the gateway waits for the whole ClientHello, reads its SNI here,
//! and refuses unknown names itself, before any handshake work. Anything this parser does not
//! understand is left to rustls, which produces the right error for malformed input.
//!
//! The same read tells which bulk cipher the client prefers (see [`Hello::prefers_chacha`]), so
//! the server can follow a client without AES hardware.
//!
//! The input is untrusted bytes from the network: every length is checked, nothing panics.

/// What the bytes so far say about the ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// Not all of the ClientHello has arrived yet.
    Incomplete,
    /// The whole ClientHello is here.
    Hello(Hello),
    /// Not a ClientHello we can read: let rustls deal with it.
    NotUnderstood,
}

/// What the gateway reads out of a complete ClientHello.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// The server name (SNI), lowercased, if the client sent one.
    pub server_name: Option<String>,
    /// The client lists ChaCha20-Poly1305 before any AES-GCM suite: the usual sign of a client
    /// without AES hardware, for which ChaCha20 is several times faster.
    pub prefers_chacha: bool,
}

/// Largest ClientHello we wait for (TLS allows 16 MiB; real ones are under 2 KiB, a few KiB
/// with post-quantum key shares).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// The fatal `unrecognized_name` alert as a plaintext TLS record (no keys exist yet).
pub const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

/// The fatal `record_overflow` alert as a plaintext TLS record.
pub const ALERT_RECORD_OVERFLOW: [u8; 7] = [21, 3, 3, 0, 2, 2, 22];

/// Whether one of the complete record headers at the start of a connection announces more than
/// the 2^14 bytes a plaintext record may hold (RFC 8446 5.1, RFC 5246 6.2.1: answer with
/// `record_overflow`). rustls answers headers past 2^14 + 2048 with `decode_error`, so the
/// gateway checks the client's first flight itself.
pub fn oversized_plaintext_record(buf: &[u8]) -> bool {
    let mut rest = buf;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len > 16 * 1024 {
            return true;
        }
        match rest.get(5 + len..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    false
}

/// Looks for a complete ClientHello at the start of `buf` (the raw bytes from the client).
pub fn peek(buf: &[u8]) -> Peek {
    // The handshake message may be split over several records: join their payloads.
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Peek::Incomplete;
        }
        if rest[0] != CONTENT_HANDSHAKE {
            return Peek::NotUnderstood;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return Peek::NotUnderstood;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Peek::Incomplete;
        };
        message.extend_from_slice(payload);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Peek::NotUnderstood;
            }
            let body_len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if body_len + 4 > MAX_CLIENT_HELLO {
                return Peek::NotUnderstood;
            }
            if message.len() >= body_len + 4 {
                return match hello(&message[4..4 + body_len]) {
                    Some(hello) => Peek::Hello(hello),
                    None => Peek::NotUnderstood,
                };
            }
        }
        if buf.len() - rest.len() > MAX_CLIENT_HELLO + 5 * 64 {
            return Peek::NotUnderstood;
        }
    }
}

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The server name and cipher preference of a ClientHello body; `None`: malformed.
fn hello(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    let suites = r.vec16()?;
    if suites.len() % 2 != 0 {
        return None;
    }
    r.vec8()?; // legacy_compression_methods
    let mut hello = Hello {
        server_name: None,
        prefers_chacha: prefers_chacha(suites),
    };
    if r.0.is_empty() {
        return Some(hello); // no extensions at all (old clients)
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == NAME_TYPE_HOST_NAME {
                let name = std::str::from_utf8(name).ok()?;
                hello.server_name = Some(name.to_ascii_lowercase());
                return Some(hello);
            }
        }
        return Some(hello);
    }
    Some(hello)
}

/// Whether the first AEAD suite in the client's list (TLS 1.3 or ECDHE with TLS 1.2) is a
/// ChaCha20-Poly1305 one rather than AES-GCM.
fn prefers_chacha(suites: &[u8]) -> bool {
    for pair in suites.chunks_exact(2) {
        match u16::from_be_bytes([pair[0], pair[1]]) {
            // TLS_CHACHA20_POLY1305_SHA256, ECDHE_RSA and ECDHE_ECDSA with CHACHA20_POLY1305.
            0x1303 | 0xcca8 | 0xcca9 => return true,
            // TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, ECDHE_{ECDSA,RSA} with AES-GCM.
            0x1301 | 0x1302 | 0xc02b | 0xc02c | 0xc02f | 0xc030 => return false,
            _ => {} // GREASE, signalling values, suites we do not serve
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello(sni: Option<&str>) -> Vec<u8> {
        client_hello_with_suites(sni, &[0x1301])
    }

    fn client_hello_with_suites(sni: Option<&str>, suites: &[u16]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend((suites.len() as u16 * 2).to_be_bytes());
        for suite in suites {
            body.extend(suite.to_be_bytes());
        }
        body.extend([1, 0]); // null compression
        let mut exts = Vec::new();
        exts.extend([0x00, 0x2b, 0, 3, 2, 3, 4]); // supported_versions
        if let Some(name) = sni {
            let mut entry = vec![NAME_TYPE_HOST_NAME];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            exts.extend(EXTENSION_SERVER_NAME.to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    fn records(msg: &[u8], fragment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(fragment) {
            out.extend([CONTENT_HANDSHAKE, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn reads_the_server_name_once_the_hello_is_complete() {
        let wire = records(&client_hello(Some("Gw.Example.com")), 1 << 14);
        for cut in 0..wire.len() {
            assert_eq!(peek(&wire[..cut]), Peek::Incomplete, "cut at {cut}");
        }
        assert_eq!(peek(&wire), named("gw.example.com"));
    }

    #[test]
    fn joins_a_hello_fragmented_over_records() {
        let wire = records(&client_hello(Some("a.example")), 7);
        assert_eq!(peek(&wire), named("a.example"));
    }

    #[test]
    fn a_hello_without_sni_has_no_name() {
        assert_eq!(
            peek(&records(&client_hello(None), 1 << 14)),
            Peek::Hello(Hello::default())
        );
    }

    fn named(name: &str) -> Peek {
        Peek::Hello(Hello {
            server_name: Some(name.into()),
            prefers_chacha: false,
        })
    }

    #[test]
    fn the_first_aead_suite_tells_the_clients_preference() {
        let cases: [(&[u16], bool); 6] = [
            // Chrome and Firefox with AES hardware, OpenSSL's default, rustls's default.
            (&[0x0a0a, 0x1301, 0x1302, 0x1303], false),
            (&[0x1302, 0x1303, 0x1301], false),
            // A phone without AES instructions (BoringSSL puts ChaCha20 first), after GREASE.
            (&[0x2a2a, 0x1303, 0x1301, 0x1302], true),
            // TLS 1.2 only.
            (&[0xcca9, 0xc02b], true),
            (&[0xc02f, 0xcca8], false),
            // Nothing we serve, or nothing at all.
            (&[0x009c, 0x00ff], false),
        ];
        for (suites, chacha) in cases {
            let wire = records(&client_hello_with_suites(Some("x"), suites), 1 << 14);
            let Peek::Hello(hello) = peek(&wire) else {
                panic!("{suites:x?}: not read");
            };
            assert_eq!(hello.prefers_chacha, chacha, "{suites:x?}");
        }
        // An odd-length suite list is malformed: rustls gets to say so.
        let mut body = client_hello_with_suites(None, &[0x1301]);
        body[4 + 2 + 32 + 1 + 1] = 3;
        assert_eq!(peek(&records(&body, 1 << 14)), Peek::NotUnderstood);
    }

    #[test]
    fn oversized_plaintext_records_are_spotted_in_the_first_flight() {
        assert!(!oversized_plaintext_record(&records(
            &client_hello(None),
            1 << 14
        )));
        assert!(oversized_plaintext_record(&[22, 3, 1, 0x40, 0x01]));
        let mut two = records(&client_hello(None), 1 << 14);
        two.extend([23, 3, 3, 0x50, 0x00]);
        assert!(oversized_plaintext_record(&two));
    }

    #[test]
    fn garbage_and_truncated_lengths_are_left_to_rustls() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n\r\n"), Peek::NotUnderstood);
        let mut wire = records(&client_hello(Some("x.example")), 1 << 14);
        // Claim a longer extensions block than the body holds.
        let body_start = 5 + 4;
        let ext_len_at = body_start + 2 + 32 + 1 + 4 + 2;
        wire[ext_len_at] = 0xff;
        assert_eq!(peek(&wire), Peek::NotUnderstood);
        // Every prefix and every single-byte corruption is handled without a panic.
        let good = records(&client_hello(Some("x.example")), 1 << 14);
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = peek(&bad);
            }
        }
    }
}
