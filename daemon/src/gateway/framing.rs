//! Cutting a connection's decrypted byte stream into frames (`framing = "length-prefixed"`).
//!
//! The client sends u32 big-endian lengths, each followed by that many bytes; each frame is one
//! packet (without its length). A frame that arrives whole in one chunk goes straight from the
//! decrypted record to the ring; one split across records is assembled in a per-connection
//! buffer that exists only while a frame is incomplete (the ring backend's [`Framer`]); a socket
//! backend forwards the stream as it is and only checks it ([`FrameChecker`]). (`stream`
//! framing needs no state: the ring backend cuts chunks to the ring's record size itself.)

/// A frame longer than the route allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds max_frame {max}")]
pub struct FrameTooLarge {
    /// Announced length.
    pub len: u32,
    /// The route's limit.
    pub max: u32,
}

/// A connection's framing state.
#[derive(Debug)]
pub struct Framer {
    max: u32,
    /// The current incomplete frame, header included.
    partial: Vec<u8>,
}

impl Framer {
    /// A framer that refuses frames longer than `max_frame`.
    pub fn new(max_frame: u32) -> Self {
        Framer {
            max: max_frame,
            partial: Vec::new(),
        }
    }

    /// Whether bytes of an incomplete frame are held (dropped if the connection ends now).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Offers decrypted bytes. Each complete packet is passed to `emit`, which returns `false`
    /// when it has no room (the packet is then offered again next time). Returns how many bytes
    /// of `data` were taken.
    pub fn push(
        &mut self,
        data: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize, FrameTooLarge> {
        let max = self.max;
        let mut used = 0;
        loop {
            // A complete assembled frame goes first.
            if let Some(len) = self.partial_frame_len(max)? {
                if self.partial.len() == 4 + len {
                    if !emit(&self.partial[4..]) {
                        return Ok(used);
                    }
                    self.partial = Vec::new();
                }
            }
            let rest = &data[used..];
            if rest.is_empty() {
                return Ok(used);
            }
            if self.partial.is_empty() && rest.len() >= 4 {
                let len = frame_len(rest, max)?;
                if rest.len() >= 4 + len {
                    // Whole frame in this chunk: no copy.
                    if !emit(&rest[4..4 + len]) {
                        return Ok(used);
                    }
                    used += 4 + len;
                    continue;
                }
            }
            let need = match self.partial_frame_len(max)? {
                None => 4 - self.partial.len(),
                Some(len) => 4 + len - self.partial.len(),
            };
            let take = need.min(rest.len());
            if self.partial.is_empty() {
                let expected = if rest.len() >= 4 {
                    4 + frame_len(rest, max)?
                } else {
                    4
                };
                self.partial.reserve_exact(expected.min(64 * 1024));
            }
            self.partial.extend_from_slice(&rest[..take]);
            used += take;
        }
    }

    fn partial_frame_len(&self, max: u32) -> Result<Option<usize>, FrameTooLarge> {
        if self.partial.len() < 4 {
            return Ok(None);
        }
        frame_len(&self.partial, max).map(Some)
    }
}

fn frame_len(header: &[u8], max: u32) -> Result<usize, FrameTooLarge> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len > max {
        return Err(FrameTooLarge { len, max });
    }
    Ok(len as usize)
}

/// Checks length-prefixed framing of a byte stream that is forwarded as it is (socket routes):
/// no buffering, just the frame boundaries and the size limit.
#[derive(Debug, Default)]
pub struct FrameChecker {
    header: [u8; 4],
    have: usize,
    remaining: usize,
}

impl FrameChecker {
    /// Checks `data`, the next bytes of the stream.
    pub fn check(&mut self, mut data: &[u8], max: u32) -> Result<(), FrameTooLarge> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == 4 {
                self.have = 0;
                self.remaining = frame_len(&self.header, max)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(sizes: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut wire = Vec::new();
        let mut packets = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            wire.extend((n as u32).to_be_bytes());
            wire.extend(&body);
            packets.push(body);
        }
        (wire, packets)
    }

    #[test]
    fn length_prefixed_frames_survive_any_chunking() {
        let (wire, packets) = frames(&[0, 1, 5, 300, 4, 1000]);
        for chunk in [1, 2, 3, 4, 5, 7, 64, 4096] {
            let mut framer = Framer::new(1000);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let used = framer
                    .push(piece, &mut |p| {
                        got.push(p.to_vec());
                        true
                    })
                    .unwrap();
                assert_eq!(used, piece.len());
            }
            assert_eq!(got, packets, "chunk size {chunk}");
            assert!(!framer.has_partial());
        }
    }

    #[test]
    fn a_full_sink_takes_nothing_more_and_loses_nothing() {
        let (wire, packets) = frames(&[10, 20, 30]);
        let mut framer = Framer::new(100);
        let mut got = Vec::new();
        let mut offset = 0;
        let mut room = 0;
        while got.len() < packets.len() {
            room += 1; // one packet of room per round
            let used = framer
                .push(&wire[offset..], &mut |p| {
                    if room == 0 {
                        return false;
                    }
                    room -= 1;
                    got.push(p.to_vec());
                    true
                })
                .unwrap();
            offset += used;
        }
        assert_eq!(got, packets);
        assert_eq!(offset, wire.len());
    }

    #[test]
    fn oversized_frames_are_refused_with_their_size() {
        let mut framer = Framer::new(16);
        let err = framer
            .push(&17u32.to_be_bytes(), &mut |_| true)
            .unwrap_err();
        assert_eq!(err, FrameTooLarge { len: 17, max: 16 });
        let mut checker = FrameChecker::default();
        let (wire, _) = frames(&[16, 3]);
        checker.check(&wire, 16).unwrap();
        assert!(checker.check(&[0, 0, 0, 17], 16).is_err());
    }
}
