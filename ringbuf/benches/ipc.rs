//! IPC benchmark: the ring against a unix `SOCK_SEQPACKET` socket pair and a pipe, in the same
//! run, between two processes pinned to different CPUs, beside two floors measured in the same
//! run: a cache line and a bare shared-memory ring.
//!
//! `cargo bench -p edgegw-ring --bench ipc --profile app` prints one JSON object per line on
//! stdout and nothing else (progress goes to stderr):
//! `{"transport","mode","size","batch","msgs_per_s","mb_per_s","p50_ns","p99_ns","build"}`, and
//! for the ring and `bare` in throughput `"full_per_1000"`, `"empty_per_1000"` (how often, per
//! 1000 packets, the writer found the ring full and the reader found it empty). `build` is the
//! cargo profile the binary was built with: `app` (the workspace's profile for what an
//! application gets, no LTO) is the one whose figures the README quotes; the default `bench`
//! profile inherits the firmware's LTO, which inlines the library into the benchmark as no
//! application that depends on it gets.
//!
//! - `throughput`: the parent writes messages of `size` bytes for a fixed time (every byte
//!   written: an 8-byte sequence word, then the fill byte), the child reads every byte (sums the
//!   payload as u64 words) and reports its sum, which must match. Ring: blocking waits with the
//!   default spin; sockets and pipes: blocking calls. `p50_ns`/`p99_ns` are null. The ring has
//!   two rows per size: `batch` 16 (publish every 16 packets, release when the ring is
//!   drained) and `batch` 1 (publish after every packet, release after every packet, as an
//!   application that handles one packet at a time does).
//! - `busy-latency`: ping-pong, both sides spinning (non-blocking reads for sockets and pipes);
//!   one-way latency = round trip / 2. `msgs_per_s` counts messages in both directions.
//! - `block-latency`: the same with blocking waits (the ring's eventfd path, no spinning).
//!
//! The floors: `line` (busy latency only) is one cache line per direction in a shared memfd,
//! written by one side and polled by the other: what moving anything between the two CPUs costs
//! now (on a shared virtual machine this moves by a factor of four as the host places the two
//! vCPUs). `bare` (throughput only, both batches) is the least a shared-memory ring can do: a
//! memfd, one position per side, fixed-size records with an 8-byte header, the same writing and
//! summing of every byte, no checks, no fences, no sleeping (its reader busy-polls).
//!
//! Fairness: every transport gets the same 1 MiB of buffering (ring capacity, `SO_SNDBUF` and
//! `SO_RCVBUF`, `F_SETPIPE_SZ`), and every receiver reads every byte.
//!
//! Extra runs (not part of the default output):
//! - `-- --compare-wrap`: ring lines for both wrap strategies, with a `"wrap"` field;
//! - `-- --compare-copy`: copying a payload out of a ring (`Payload::copy_to_slice`, atomic word
//!   loads) against `memcpy` of the same bytes, in one process;
//! - `-- --compare-spin`: latency and the reader's CPU time per packet against the gap between
//!   packets and the reader's spin before it sleeps;
//! - `-- --first-packet`: the first packets through new rings, with and without `prefault`;
//! - `-- --loop PACKETS BATCH SIZE`: one thread, one ring, the public API and nothing else,
//!   for instruction counts under callgrind.
//!
//! Each measurement runs `EDGEGW_BENCH_SECONDS` (default 0.2) and is repeated
//! `EDGEGW_BENCH_REPS` times (default 3), the transports interleaved; each line is the median
//! repetition. `EDGEGW_BENCH_RING_CAPACITY` overrides the ring's 1 MiB;
//! `-- --only MODE[:SIZE[:BATCH]]` runs a subset.

use edgegw_ring::{Consumer, Error, Producer, Readiness, RingConfig, RingFds, WrapMode};
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];
const BUFFER: usize = 1 << 20;
const TYPE_DATA: u16 = 1;
const TYPE_STOP: u16 = 2;
const STOP_WORD: u64 = u64::MAX;
const PARENT_CPU: usize = 0;
const CHILD_CPU: usize = 1;

/// Pin the calling process to one CPU.
fn pin_to_cpu(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Ring(WrapMode),
    Unix,
    Pipe,
    /// Busy latency only: one cache line written by each side in shared memory, nothing else:
    /// the floor of any shared-memory transport on this machine, now.
    Line,
    /// Throughput only: the least a shared-memory ring can do (a memfd, one position per side,
    /// records of a fixed size with an 8-byte header, no checks, no sleeping, a busy-polling
    /// reader): the floor the ring's own rows are measured against in the same run.
    Bare,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ring(_) => "ring",
            Transport::Unix => "unix",
            Transport::Pipe => "pipe",
            Transport::Line => "line",
            Transport::Bare => "bare",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Transport::Ring(WrapMode::Pad) => "ring-pad",
            Transport::Ring(WrapMode::Mirror) => "ring-mirror",
            Transport::Unix => "unix",
            Transport::Pipe => "pipe",
            Transport::Line => "line",
            Transport::Bare => "bare",
        }
    }
    fn parse(s: &str) -> Transport {
        match s {
            "ring-pad" => Transport::Ring(WrapMode::Pad),
            "ring-mirror" => Transport::Ring(WrapMode::Mirror),
            "unix" => Transport::Unix,
            "pipe" => Transport::Pipe,
            "line" => Transport::Line,
            "bare" => Transport::Bare,
            _ => panic!("unknown transport {s}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Throughput,
    BusyLatency,
    BlockLatency,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::BusyLatency => "busy-latency",
            Mode::BlockLatency => "block-latency",
        }
    }
    fn parse(s: &str) -> Mode {
        match s {
            "throughput" => Mode::Throughput,
            "busy-latency" => Mode::BusyLatency,
            "block-latency" => Mode::BlockLatency,
            _ => panic!("unknown mode {s}"),
        }
    }
}

/// The fill byte of message `seq`.
fn fill_byte(seq: u64) -> u8 {
    (seq as u8) | 1
}

/// Sum of the u64 words of a message `seq` of `size` bytes, as the reader computes it.
fn expected_sum(seq: u64, size: usize) -> u64 {
    let word = u64::from_ne_bytes([fill_byte(seq); 8]);
    seq.wrapping_add(word.wrapping_mul((size / 8 - 1) as u64))
}

/// Write message `seq` into `buf` (every byte).
fn write_message(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_ne_bytes());
    buf[8..].fill(fill_byte(seq));
}

fn sum_words(buf: &[u8]) -> u64 {
    buf.chunks_exact(8).fold(0u64, |a, w| {
        a.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()))
    })
}

/// Repetitions per measurement (`EDGEGW_BENCH_REPS`, default 3); the median is reported.
fn reps() -> usize {
    std::env::var("EDGEGW_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// Ring capacity: the 1 MiB default, or `EDGEGW_BENCH_RING_CAPACITY`.
fn ring_capacity() -> usize {
    std::env::var("EDGEGW_BENCH_RING_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BUFFER)
}

fn seconds() -> Duration {
    let s: f64 = std::env::var("EDGEGW_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.2);
    Duration::from_secs_f64(s.max(0.05))
}

// ---------------------------------------------------------------- endpoints over fds

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    let fl = if on {
        fl | OFlag::O_NONBLOCK
    } else {
        fl & !OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(fl)).unwrap();
}

/// Send one message of `buf.len()` bytes on a socket or pipe (blocking).
fn fd_send(fd: BorrowedFd<'_>, buf: &[u8], socket: bool) {
    if socket {
        let n = socket::send(fd.as_raw_fd(), buf, MsgFlags::empty()).expect("send");
        assert_eq!(n, buf.len());
    } else {
        let mut off = 0;
        while off < buf.len() {
            off += nix::unistd::write(fd, &buf[off..]).expect("pipe write");
        }
    }
}

/// Receive one message of exactly `buf.len()` bytes; spin on EAGAIN if `busy`.
fn fd_recv(fd: BorrowedFd<'_>, buf: &mut [u8], socket: bool, busy: bool) {
    if socket {
        let flags = if busy {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        loop {
            match socket::recv(fd.as_raw_fd(), buf, flags) {
                Ok(n) => {
                    assert_eq!(n, buf.len(), "short message");
                    return;
                }
                Err(nix::Error::EAGAIN) => std::hint::spin_loop(),
                Err(e) => panic!("recv: {e}"),
            }
        }
    } else {
        let mut off = 0;
        while off < buf.len() {
            match nix::unistd::read(fd, &mut buf[off..]) {
                Ok(0) => panic!("pipe closed"),
                Ok(n) => off += n,
                Err(nix::Error::EAGAIN) => std::hint::spin_loop(),
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// Reserve a ring record, waiting for space (spinning if `busy`).
fn ring_send(p: &mut Producer, size: usize, ty: u16, seq: u64, busy: bool) -> u64 {
    loop {
        match p.reserve(size, ty, 0) {
            Ok(buf) => {
                write_message(seq, buf);
                return expected_sum(seq, size);
            }
            Err(Error::Full { .. }) => {
                p.publish();
                if busy {
                    std::hint::spin_loop();
                } else {
                    let r = p
                        .wait_for_space(size, Some(Duration::from_secs(30)))
                        .unwrap();
                    assert_eq!(r, Readiness::Ready, "producer waited 30 s for space");
                }
            }
            Err(e) => panic!("reserve: {e}"),
        }
    }
}

/// Read one ring record (spinning or blocking), sum it in place, release it. Returns
/// `(type, sum)`.
fn ring_recv(c: &mut Consumer, busy: bool) -> (u16, u64) {
    loop {
        if let Some(rec) = c.read().unwrap() {
            let out = (
                rec.record_type(),
                rec.payload().fold_words(0u64, |a, w| a.wrapping_add(w)),
            );
            c.release();
            return out;
        }
        if busy {
            std::hint::spin_loop();
        } else {
            let r = c.wait(Some(Duration::from_secs(30))).unwrap();
            assert_eq!(r, Readiness::Ready, "consumer waited 30 s for data");
        }
    }
}

/// A memfd of `len` bytes for the `line` and `bare` baselines.
fn shared_memfd(name: &str, len: usize) -> OwnedFd {
    let name = std::ffi::CString::new(name).unwrap();
    let memfd =
        nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
    nix::unistd::ftruncate(&memfd, len as i64).unwrap();
    memfd
}

/// A memfd mapped by both processes of the `line` and `bare` baselines, accessed with atomic
/// word loads and stores (and, by the `bare` writer, plain writes to space it alone owns).
struct SharedMem(memmap2::MmapRaw);

/// `line`: the parent writes a sequence number at `PING`, the child answers it at `PONG`.
const PING: usize = 0;
const PONG: usize = 128;

impl SharedMem {
    fn map(memfd: OwnedFd) -> SharedMem {
        SharedMem(memmap2::MmapRaw::map_raw(&std::fs::File::from(memfd)).unwrap())
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.0.len());
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the two processes
        // access these words only atomically.
        unsafe { AtomicU64::from_ptr(self.0.as_mut_ptr().wrapping_add(offset).cast()) }
    }

    /// Spin until the word at `offset` is `seq` or the stop word; returns it.
    fn wait_for(&self, offset: usize, seq: u64) -> u64 {
        loop {
            let v = self.word(offset).load(Ordering::Acquire);
            if v == seq || v == STOP_WORD {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

/// `bare`: where the positions and the data live in its memfd.
const BARE_PRODUCER_POS: usize = 0;
const BARE_CONSUMER_POS: usize = 128;
const BARE_DATA: usize = 4096;

/// Where a `bare` record of `total` bytes goes: a record that would cross the end of the data
/// area starts the next lap instead (both sides know the fixed size, so no padding record).
fn bare_place(pos: u64, total: u64) -> u64 {
    let offset = pos % BUFFER as u64;
    if offset + total > BUFFER as u64 {
        pos + (BUFFER as u64 - offset)
    } else {
        pos
    }
}

/// The writing side of the `bare` baseline.
struct BareWriter<'a> {
    shm: &'a SharedMem,
    size: usize,
    total: u64,
    write_pos: u64,
    consumer_cache: u64,
    /// Times the ring was found full.
    full: u64,
}

impl<'a> BareWriter<'a> {
    fn new(shm: &'a SharedMem, size: usize) -> Self {
        BareWriter {
            shm,
            size,
            total: (8 + size as u64 + 7) & !7,
            write_pos: 0,
            consumer_cache: 0,
            full: 0,
        }
    }

    /// Write message `seq` (or the stop record) in place, waiting for room; returns its sum.
    fn send(&mut self, seq: u64, stop: bool) -> u64 {
        let at = bare_place(self.write_pos, self.total);
        if at + self.total - self.consumer_cache > BUFFER as u64 {
            // Full: publish what is pending (a batch may not fit the ring), then wait for room.
            self.full += 1;
            self.publish();
            while at + self.total - self.consumer_cache > BUFFER as u64 {
                self.consumer_cache = self.shm.word(BARE_CONSUMER_POS).load(Ordering::Acquire);
                std::hint::spin_loop();
            }
        }
        let offset = BARE_DATA + (at % BUFFER as u64) as usize;
        let header = if stop { STOP_WORD } else { self.size as u64 };
        self.shm.word(offset).store(header, Ordering::Relaxed);
        assert!(offset + 8 + self.size <= self.shm.0.len());
        // SAFETY: in bounds (assert); this space is free (the reader released it, checked
        // above) and unpublished, so nothing else accesses it until `publish`.
        let payload = unsafe {
            std::slice::from_raw_parts_mut(
                self.shm.0.as_mut_ptr().wrapping_add(offset + 8),
                self.size,
            )
        };
        write_message(seq, payload);
        self.write_pos = at + self.total;
        expected_sum(seq, self.size)
    }

    fn publish(&mut self) {
        self.shm
            .word(BARE_PRODUCER_POS)
            .store(self.write_pos, Ordering::Release);
    }
}

/// The reading side of the `bare` baseline: every record summed in place (atomic word loads),
/// released after each one (`batch` 1) or when drained. Returns (count, sum, times empty).
fn bare_reader(shm: &SharedMem, size: usize, batch: usize) -> (u64, u64, u64) {
    let total = (8 + size as u64 + 7) & !7;
    let (mut read_pos, mut producer_cache) = (0u64, 0u64);
    let (mut count, mut sum, mut empty) = (0u64, 0u64, 0u64);
    loop {
        if read_pos == producer_cache {
            producer_cache = shm.word(BARE_PRODUCER_POS).load(Ordering::Acquire);
            if read_pos == producer_cache {
                shm.word(BARE_CONSUMER_POS)
                    .store(read_pos, Ordering::Release);
                empty += 1;
                while shm.word(BARE_PRODUCER_POS).load(Ordering::Acquire) == read_pos {
                    std::hint::spin_loop();
                }
                continue;
            }
        }
        let at = bare_place(read_pos, total);
        let offset = BARE_DATA + (at % BUFFER as u64) as usize;
        if shm.word(offset).load(Ordering::Relaxed) == STOP_WORD {
            break;
        }
        let mut s = 0u64;
        for i in 0..size / 8 {
            s = s.wrapping_add(shm.word(offset + 8 + i * 8).load(Ordering::Relaxed));
        }
        sum = sum.wrapping_add(s);
        count += 1;
        read_pos = at + total;
        if batch == 1 {
            shm.word(BARE_CONSUMER_POS)
                .store(read_pos, Ordering::Release);
        }
    }
    (count, sum, empty)
}

// ---------------------------------------------------------------- the child process

fn child_main(args: &[String]) {
    let transport = Transport::parse(&args[0]);
    let mode = Mode::parse(&args[1]);
    let size: usize = args[2].parse().unwrap();
    let batch: usize = args[3].parse().unwrap();
    let _ = pin_to_cpu(CHILD_CPU);
    let fds: Vec<RawFd> = std::env::var("BENCH_FDS")
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    // The parent opened these fds for us and passed their numbers in BENCH_FDS.
    let take = |fd: RawFd| -> OwnedFd {
        // SAFETY: the parent passed this open descriptor to us alone (see above).
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let mut result = std::fs::File::from(take(fds[0]));
    match mode {
        Mode::Throughput => {
            let (count, sum, empty) = match transport {
                Transport::Ring(_) => {
                    let mut c = Consumer::from_fds(RingFds::from_env().unwrap()).unwrap();
                    let (mut count, mut sum, mut empty) = (0u64, 0u64, 0u64);
                    loop {
                        let mut stop = false;
                        while let Some(rec) = c.read().unwrap() {
                            if rec.record_type() == TYPE_STOP {
                                stop = true;
                                break;
                            }
                            sum = sum.wrapping_add(
                                rec.payload().fold_words(0u64, |a, w| a.wrapping_add(w)),
                            );
                            count += 1;
                            // Per packet: release each record as soon as it is read.
                            if batch == 1 {
                                c.release();
                            }
                        }
                        // Batched: release once the ring is drained.
                        c.release();
                        if stop {
                            break;
                        }
                        empty += 1;
                        let r = c.wait(Some(Duration::from_secs(30))).unwrap();
                        assert_eq!(r, Readiness::Ready);
                    }
                    (count, sum, empty)
                }
                Transport::Line => unreachable!("line is a latency baseline only"),
                Transport::Bare => bare_reader(&SharedMem::map(take(fds[1])), size, batch),
                Transport::Unix | Transport::Pipe => {
                    let fd = take(fds[1]);
                    let socket = transport == Transport::Unix;
                    let mut buf = vec![0u8; size];
                    let (mut count, mut sum) = (0u64, 0u64);
                    loop {
                        fd_recv(fd.as_fd(), &mut buf, socket, false);
                        if buf[..8] == STOP_WORD.to_ne_bytes() {
                            break;
                        }
                        sum = sum.wrapping_add(sum_words(&buf));
                        count += 1;
                    }
                    (count, sum, 0)
                }
            };
            writeln!(result, "{count} {sum} {empty}").unwrap();
        }
        Mode::BusyLatency | Mode::BlockLatency => {
            let busy = mode == Mode::BusyLatency;
            match transport {
                Transport::Ring(_) => {
                    // The ping ring arrives by RingFds::from_env; the pong ring's fds follow.
                    let mut ping = Consumer::from_fds(RingFds::from_env().unwrap()).unwrap();
                    let pong_fds = RingFds::from_array([
                        take(fds[1]),
                        take(fds[2]),
                        take(fds[3]),
                        take(fds[4]),
                    ]);
                    let mut pong = Producer::from_fds(pong_fds).unwrap();
                    if !busy {
                        ping.set_spin(Duration::ZERO);
                        pong.set_spin(Duration::ZERO);
                    }
                    // `--first-packet`: say when set up (and prefaulted, if asked), so that the
                    // parent times the first packet, not this process's start.
                    if let Ok(v) = std::env::var(FIRST_PACKET_ENV) {
                        if v == "prefault" {
                            ping.prefault();
                            pong.prefault();
                        }
                        writeln!(result, "ready").unwrap();
                    }
                    let mut seq = 0u64;
                    loop {
                        let (ty, sum) = ring_recv(&mut ping, busy);
                        if ty == TYPE_STOP {
                            break;
                        }
                        assert_eq!(sum, expected_sum(seq, size), "ping payload");
                        ring_send(&mut pong, size, TYPE_DATA, seq, busy);
                        pong.publish();
                        seq += 1;
                    }
                }
                Transport::Unix | Transport::Pipe => {
                    let socket = transport == Transport::Unix;
                    let (rx, tx) = if socket {
                        let s = take(fds[1]);
                        (s.try_clone().unwrap(), s)
                    } else {
                        (take(fds[1]), take(fds[2]))
                    };
                    set_nonblocking(rx.as_fd(), busy);
                    let mut buf = vec![0u8; size];
                    let mut seq = 0u64;
                    loop {
                        fd_recv(rx.as_fd(), &mut buf, socket, busy);
                        if buf[..8] == STOP_WORD.to_ne_bytes() {
                            break;
                        }
                        assert_eq!(sum_words(&buf), expected_sum(seq, size), "ping payload");
                        write_message(seq, &mut buf);
                        fd_send(tx.as_fd(), &buf, socket);
                        seq += 1;
                    }
                }
                Transport::Bare => unreachable!("bare is a throughput baseline only"),
                Transport::Line => {
                    let lines = SharedMem::map(take(fds[1]));
                    let mut seq = 1u64;
                    loop {
                        let v = lines.wait_for(PING, seq);
                        if v == STOP_WORD {
                            break;
                        }
                        lines.word(PONG).store(seq, Ordering::Release);
                        seq += 1;
                    }
                }
            }
            writeln!(result, "done").unwrap();
        }
    }
}

// ---------------------------------------------------------------- the parent process

struct Run {
    child: Child,
    result: BufReader<std::fs::File>,
}

fn inheritable(fd: BorrowedFd<'_>) -> RawFd {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    fd.as_raw_fd()
}

/// Start the child for `transport`/`mode`/`size` with `fds` inherited (result pipe first).
fn spawn_child(
    transport: Transport,
    mode: Mode,
    size: usize,
    batch: usize,
    fds: &[BorrowedFd<'_>],
    ring_env: Option<String>,
) -> Run {
    let (result_r, result_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut list = vec![inheritable(result_w.as_fd())];
    list.extend(fds.iter().map(|f| inheritable(*f)));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--child",
        transport.arg(),
        mode.name(),
        &size.to_string(),
        &batch.to_string(),
    ])
    .env(
        "BENCH_FDS",
        list.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    if let Some(v) = ring_env {
        cmd.env(RingFds::ENV, v);
    }
    let child = cmd.spawn().expect("spawn bench child");
    drop(result_w);
    Run {
        child,
        result: BufReader::new(std::fs::File::from(result_r)),
    }
}

impl Run {
    fn line(&mut self) -> String {
        let mut s = String::new();
        self.result.read_line(&mut s).unwrap();
        s
    }
    fn finish(mut self) {
        let mut rest = String::new();
        let _ = self.result.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "bench child failed: {status}");
    }
}

fn socket_pair() -> (OwnedFd, OwnedFd) {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    for s in [&a, &b] {
        socket::setsockopt(s, sockopt::SndBuf, &BUFFER).unwrap();
        socket::setsockopt(s, sockopt::RcvBuf, &BUFFER).unwrap();
    }
    (a, b)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // Same buffering as the ring; falls back to the default if the limit is lower.
    let _ = nix::fcntl::fcntl(w.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(BUFFER as i32));
    (r, w)
}

struct Measurement {
    msgs_per_s: f64,
    p50_ns: Option<f64>,
    p99_ns: Option<f64>,
    /// Ring throughput: how often, per 1000 packets, the writer found the ring full.
    full_per_1000: Option<f64>,
    /// Ring throughput: how often, per 1000 packets, the reader found the ring empty.
    empty_per_1000: Option<f64>,
}

fn throughput(transport: Transport, size: usize, batch: usize) -> Measurement {
    let duration = seconds();
    let mut expected = 0u64;
    let mut sent = 0u64;
    let mut full = 0u64;
    let (empty, elapsed) = match transport {
        Transport::Ring(wrap) => {
            let mut p =
                Producer::create(RingConfig::with_capacity(ring_capacity()).wrap(wrap)).unwrap();
            let fds = p.served_ring().unwrap().into_fds();
            let mut run = spawn_child(
                transport,
                Mode::Throughput,
                size,
                batch,
                &[],
                Some(fds.export_for_child().unwrap()),
            );
            drop(fds);
            let start = Instant::now();
            // The writer's loop as an application writes it: reserve, fill in place, publish,
            // in the loop itself. (A call per packet that the compiler does not inline costs
            // this loop about half its packets per second: its stack stores queue behind the
            // ring's, see the README.)
            while sent & 1023 != 0 || start.elapsed() < duration {
                match p.reserve(size, TYPE_DATA, 0) {
                    Ok(buf) => {
                        write_message(sent, buf);
                        expected = expected.wrapping_add(expected_sum(sent, size));
                        sent += 1;
                        if sent.is_multiple_of(batch as u64) {
                            p.publish();
                        }
                    }
                    Err(Error::Full { .. }) => {
                        full += 1;
                        p.publish();
                        let r = p
                            .wait_for_space(size, Some(Duration::from_secs(30)))
                            .unwrap();
                        assert_eq!(r, Readiness::Ready, "producer waited 30 s for space");
                    }
                    Err(e) => panic!("reserve: {e}"),
                }
            }
            ring_send(&mut p, 8, TYPE_STOP, 0, false);
            p.publish();
            let line = run.line();
            (
                finish_throughput(run, line, sent, expected),
                start.elapsed(),
            )
        }
        Transport::Line => unreachable!("line is a latency baseline only"),
        Transport::Bare => {
            let memfd = shared_memfd("ipc-bench-bare", BARE_DATA + BUFFER);
            let mut run = spawn_child(
                transport,
                Mode::Throughput,
                size,
                batch,
                &[memfd.as_fd()],
                None,
            );
            let shm = SharedMem::map(memfd);
            let start = Instant::now();
            let mut writer = BareWriter::new(&shm, size);
            while sent & 1023 != 0 || start.elapsed() < duration {
                expected = expected.wrapping_add(writer.send(sent, false));
                sent += 1;
                if sent.is_multiple_of(batch as u64) {
                    writer.publish();
                }
            }
            writer.send(0, true);
            writer.publish();
            full = writer.full;
            let line = run.line();
            (
                finish_throughput(run, line, sent, expected),
                start.elapsed(),
            )
        }
        Transport::Unix | Transport::Pipe => {
            let (tx, rx) = if transport == Transport::Unix {
                let (a, b) = socket_pair();
                (a, b)
            } else {
                let (r, w) = pipe();
                (w, r)
            };
            let socket = transport == Transport::Unix;
            let mut run = spawn_child(transport, Mode::Throughput, size, 1, &[rx.as_fd()], None);
            drop(rx);
            let mut buf = vec![0u8; size];
            let start = Instant::now();
            while sent & 1023 != 0 || start.elapsed() < duration {
                write_message(sent, &mut buf);
                fd_send(tx.as_fd(), &buf, socket);
                expected = expected.wrapping_add(expected_sum(sent, size));
                sent += 1;
            }
            buf[..8].copy_from_slice(&STOP_WORD.to_ne_bytes());
            fd_send(tx.as_fd(), &buf, socket);
            let line = run.line();
            (
                finish_throughput(run, line, sent, expected),
                start.elapsed(),
            )
        }
    };
    let ring = matches!(transport, Transport::Ring(_) | Transport::Bare);
    Measurement {
        msgs_per_s: sent as f64 / elapsed.as_secs_f64(),
        p50_ns: None,
        p99_ns: None,
        full_per_1000: ring.then(|| full as f64 * 1000.0 / sent as f64),
        empty_per_1000: ring.then(|| empty as f64 * 1000.0 / sent as f64),
    }
}

/// Check the reader's report; returns how often it found the ring empty.
fn finish_throughput(run: Run, line: String, sent: u64, expected: u64) -> u64 {
    let mut parts = line.split_whitespace();
    let count: u64 = parts.next().expect("child count").parse().unwrap();
    let sum: u64 = parts.next().expect("child sum").parse().unwrap();
    let empty: u64 = parts.next().expect("child empty count").parse().unwrap();
    assert_eq!(count, sent, "the reader got every message");
    assert_eq!(sum, expected, "the reader read every byte");
    run.finish();
    empty
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn latency(transport: Transport, size: usize, busy: bool) -> Measurement {
    let mode = if busy {
        Mode::BusyLatency
    } else {
        Mode::BlockLatency
    };
    let duration = seconds();
    let warmup = 200u64;
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 20);
    let start;
    let mut rounds = 0u64;
    match transport {
        Transport::Ring(wrap) => {
            let config = RingConfig::with_capacity(ring_capacity()).wrap(wrap);
            let mut ping = Producer::create(config).unwrap();
            let mut pong = Consumer::create(config).unwrap();
            let ping_fds = ping.served_ring().unwrap().into_fds();
            let pong_fds = pong.served_ring().unwrap().into_fds();
            let run = spawn_child(
                transport,
                mode,
                size,
                1,
                &pong_fds.as_array(),
                Some(ping_fds.export_for_child().unwrap()),
            );
            drop((ping_fds, pong_fds));
            if !busy {
                ping.set_spin(Duration::ZERO);
                pong.set_spin(Duration::ZERO);
            }
            start = Instant::now();
            while start.elapsed() < duration || rounds < warmup + 100 {
                let t0 = Instant::now();
                ring_send(&mut ping, size, TYPE_DATA, rounds, busy);
                ping.publish();
                let (_, sum) = ring_recv(&mut pong, busy);
                let rtt = t0.elapsed().as_nanos() as u64;
                assert_eq!(sum, expected_sum(rounds, size), "pong payload");
                if rounds >= warmup && samples.len() < samples.capacity() {
                    samples.push(rtt);
                }
                rounds += 1;
            }
            ring_send(&mut ping, 8, TYPE_STOP, 0, busy);
            ping.publish();
            let mut run = run;
            let _ = run.line();
            run.finish();
        }
        Transport::Bare => unreachable!("bare is a throughput baseline only"),
        Transport::Line => {
            let memfd = shared_memfd("ipc-bench-line", 4096);
            let run = spawn_child(transport, mode, size, 1, &[memfd.as_fd()], None);
            let lines = SharedMem::map(memfd);
            start = Instant::now();
            while start.elapsed() < duration || rounds < warmup + 100 {
                let seq = rounds + 1;
                let t0 = Instant::now();
                lines.word(PING).store(seq, Ordering::Release);
                lines.wait_for(PONG, seq);
                let rtt = t0.elapsed().as_nanos() as u64;
                if rounds >= warmup && samples.len() < samples.capacity() {
                    samples.push(rtt);
                }
                rounds += 1;
            }
            lines.word(PING).store(STOP_WORD, Ordering::Release);
            let mut run = run;
            let _ = run.line();
            run.finish();
        }
        Transport::Unix | Transport::Pipe => {
            let socket = transport == Transport::Unix;
            let (mine_rx, mine_tx, run) = if socket {
                let (a, b) = socket_pair();
                let run = spawn_child(transport, mode, size, 1, &[b.as_fd()], None);
                (a.try_clone().unwrap(), a, run)
            } else {
                let (to_child_r, to_child_w) = pipe();
                let (to_parent_r, to_parent_w) = pipe();
                let run = spawn_child(
                    transport,
                    mode,
                    size,
                    1,
                    &[to_child_r.as_fd(), to_parent_w.as_fd()],
                    None,
                );
                (to_parent_r, to_child_w, run)
            };
            set_nonblocking(mine_rx.as_fd(), busy);
            let mut buf = vec![0u8; size];
            start = Instant::now();
            while start.elapsed() < duration || rounds < warmup + 100 {
                let t0 = Instant::now();
                write_message(rounds, &mut buf);
                fd_send(mine_tx.as_fd(), &buf, socket);
                fd_recv(mine_rx.as_fd(), &mut buf, socket, busy);
                let rtt = t0.elapsed().as_nanos() as u64;
                assert_eq!(sum_words(&buf), expected_sum(rounds, size), "pong payload");
                if rounds >= warmup && samples.len() < samples.capacity() {
                    samples.push(rtt);
                }
                rounds += 1;
            }
            buf[..8].copy_from_slice(&STOP_WORD.to_ne_bytes());
            fd_send(mine_tx.as_fd(), &buf, socket);
            let mut run = run;
            let _ = run.line();
            run.finish();
        }
    }
    let _ = start;
    // Rate from the timed round trips themselves (two messages each), not from wall time that
    // includes the child's start-up.
    let busy_ns: u64 = samples.iter().sum();
    samples.sort_unstable();
    Measurement {
        msgs_per_s: 2.0 * samples.len() as f64 / (busy_ns as f64 / 1e9),
        p50_ns: Some(percentile(&samples, 0.5) / 2.0),
        p99_ns: Some(percentile(&samples, 0.99) / 2.0),
        full_per_1000: None,
        empty_per_1000: None,
    }
}

/// One row of the output: a transport, and for rings how many packets go per publish and
/// release.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Subject {
    transport: Transport,
    /// Packets per publish (and, for the reader, per release): 1 is per packet. Sockets and
    /// pipes are always 1 (one system call per message).
    batch: usize,
}

/// The rows measured for `mode`: in throughput, the ring batched (publish every 16 packets,
/// release when drained) and per packet (publish and release after every packet); the latency
/// modes are per packet by nature.
fn subjects(mode: Mode, transports: &[Transport]) -> Vec<Subject> {
    let mut out = Vec::new();
    for &transport in transports {
        match (transport, mode) {
            (Transport::Ring(_), Mode::Throughput) => {
                out.push(Subject {
                    transport,
                    batch: BATCH,
                });
                out.push(Subject {
                    transport,
                    batch: 1,
                });
            }
            // The floor of one cache line, beside every busy-latency size: the rows show how
            // the machine's cross-CPU latency moved during the run.
            (Transport::Line, Mode::BusyLatency) => out.push(Subject {
                transport,
                batch: 1,
            }),
            (Transport::Line, _) => {}
            (Transport::Bare, Mode::Throughput) => {
                out.push(Subject {
                    transport,
                    batch: BATCH,
                });
                out.push(Subject {
                    transport,
                    batch: 1,
                });
            }
            (Transport::Bare, _) => {}
            _ => out.push(Subject {
                transport,
                batch: 1,
            }),
        }
    }
    out
}

/// Packets per publish in the batched throughput rows.
const BATCH: usize = 16;

/// The cargo profile this binary was built with (the directory above `deps/`): `app` is how an
/// application builds a library it depends on (no LTO); see the README.
fn build_profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            let profile = deps.parent()?;
            Some(profile.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn emit(subject: Subject, mode: Mode, size: usize, m: &Measurement, wrap_field: bool) {
    let mut obj = serde_json::json!({
        "transport": subject.transport.name(),
        "mode": mode.name(),
        "size": size,
        "batch": subject.batch,
        "msgs_per_s": m.msgs_per_s.round(),
        "mb_per_s": (m.msgs_per_s * size as f64 / 1e6 * 10.0).round() / 10.0,
        "p50_ns": m.p50_ns.map(|v| v.round()),
        "p99_ns": m.p99_ns.map(|v| v.round()),
        "build": build_profile(),
    });
    if let (Some(full), Some(empty)) = (m.full_per_1000, m.empty_per_1000) {
        obj["full_per_1000"] = serde_json::json!((full * 10.0).round() / 10.0);
        obj["empty_per_1000"] = serde_json::json!((empty * 10.0).round() / 10.0);
    }
    if wrap_field {
        if let Transport::Ring(w) = subject.transport {
            obj["wrap"] = serde_json::json!(w.to_string());
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{obj}").unwrap();
    out.flush().unwrap();
}

fn measure(subject: Subject, mode: Mode, size: usize) -> Measurement {
    eprintln!(
        "ipc bench: {} {} {size} batch {}",
        subject.transport.arg(),
        mode.name(),
        subject.batch
    );
    match mode {
        Mode::Throughput => throughput(subject.transport, size, subject.batch),
        Mode::BusyLatency => latency(subject.transport, size, true),
        Mode::BlockLatency => latency(subject.transport, size, false),
    }
}

/// `-- --loop PACKETS BATCH SIZE`: one thread moves PACKETS packets of SIZE bytes through one
/// ring through the public API (reserve, write every byte, publish every BATCH packets; read,
/// sum every byte, release every BATCH packets) and prints the checksum. For instruction counts
/// per packet, which do not depend on the load of the machine:
/// `valgrind --tool=callgrind --toggle-collect='*ring_loop*' target/app/deps/ipc-* --loop ...`.
fn single_thread_loop(args: &[String]) {
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|v| v.parse().ok())
            .expect("--loop PACKETS BATCH SIZE")
    };
    let (packets, batch, size) = (num(0), num(1), num(2));
    let mut p = Producer::create(RingConfig::with_capacity(ring_capacity())).unwrap();
    let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
    let sum = ring_loop(&mut p, &mut c, packets as u64, batch as u64, size);
    println!(
        "{}",
        serde_json::json!({"bench": "loop", "packets": packets, "batch": batch, "size": size, "sum": sum})
    );
}

#[inline(never)]
fn ring_loop(p: &mut Producer, c: &mut Consumer, packets: u64, batch: u64, size: usize) -> u64 {
    let mut sum = 0u64;
    let mut seq = 0;
    while seq < packets {
        for _ in 0..batch {
            write_message(seq, p.reserve(size, TYPE_DATA, 0).expect("room"));
            seq += 1;
            if batch == 1 {
                p.publish();
            }
        }
        p.publish();
        for _ in 0..batch {
            let rec = c.read().unwrap().expect("a record");
            sum = sum.wrapping_add(rec.payload().fold_words(0u64, |a, w| a.wrapping_add(w)));
            if batch == 1 {
                c.release();
            }
        }
        c.release();
    }
    sum
}

/// `--first-packet`: tells the latency child to report when it is set up, and whether to
/// prefault its ends first (`prefault`) or not (`cold`).
const FIRST_PACKET_ENV: &str = "EDGEGW_BENCH_FIRST_PACKET";

/// `-- --first-packet`: how much the first packets through a new ring cost, with and without
/// `prefault` on both ends. For each of 20 fresh pairs of rings (ping and pong, the bench's
/// capacity, pad mode), busy ping-pong of 64-byte packets for one lap of the ring: the
/// one-way latency of the very first packet, and the mean and median one-way latency over the
/// lap. Prints the median over the rings of each (and the worst first packet), one JSON line
/// per setting.
fn first_packet() {
    const RINGS: usize = 20;
    let size = 64;
    for prefault in [false, true] {
        let (mut first, mut lap_mean, mut lap_p50) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RINGS {
            let config = RingConfig::with_capacity(ring_capacity());
            let mut ping = Producer::create(config).unwrap();
            let mut pong = Consumer::create(config).unwrap();
            let ping_fds = ping.served_ring().unwrap().into_fds();
            let pong_fds = pong.served_ring().unwrap().into_fds();
            std::env::set_var(FIRST_PACKET_ENV, if prefault { "prefault" } else { "cold" });
            let mut run = spawn_child(
                Transport::Ring(WrapMode::Pad),
                Mode::BusyLatency,
                size,
                1,
                &pong_fds.as_array(),
                Some(ping_fds.export_for_child().unwrap()),
            );
            std::env::remove_var(FIRST_PACKET_ENV);
            drop((ping_fds, pong_fds));
            if prefault {
                ping.prefault();
                pong.prefault();
            }
            assert_eq!(run.line().trim(), "ready");
            let rounds = (ring_capacity() / (size + 8)) as u64;
            let mut samples = Vec::with_capacity(rounds as usize);
            for seq in 0..rounds {
                let t0 = Instant::now();
                ring_send(&mut ping, size, TYPE_DATA, seq, true);
                ping.publish();
                let (_, sum) = ring_recv(&mut pong, true);
                samples.push(t0.elapsed().as_nanos() as f64 / 2.0);
                assert_eq!(sum, expected_sum(seq, size), "pong payload");
            }
            first.push(samples[0]);
            lap_mean.push(samples.iter().sum::<f64>() / rounds as f64);
            samples.sort_by(f64::total_cmp);
            lap_p50.push(samples[samples.len() / 2]);
            ring_send(&mut ping, 8, TYPE_STOP, 0, true);
            ping.publish();
            let _ = run.line();
            run.finish();
        }
        for v in [&mut first, &mut lap_mean, &mut lap_p50] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "first-packet",
                "prefault": prefault,
                "size": size,
                "rings": RINGS,
                "first_p50_ns": first[RINGS / 2].round(),
                "first_max_ns": first[RINGS - 1].round(),
                "lap_mean_p50_ns": lap_mean[RINGS / 2].round(),
                "lap_p50_p50_ns": lap_p50[RINGS / 2].round(),
                "build": build_profile(),
            })
        );
    }
}

/// Nanoseconds on the system's real-time clock, which both processes of `--compare-spin` read.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// CPU time this process has run so far, in nanoseconds (`/proc/self/schedstat`).
fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// `-- --compare-spin`: what the consumer's spin before sleeping buys and costs. A producer
/// sends 16-byte packets one at a time with a fixed gap between them (busy-waiting the gap, so
/// the gap is exact), for 0.3 s; the consumer, in another process on the other CPU, waits with
/// `Consumer::wait` and a given spin (`set_spin`). For each gap and spin: the one-way latency
/// (p50, p99,
/// from a timestamp in the packet) and the consumer's CPU time per packet. One JSON line each.
fn compare_spin() {
    for gap_us in [1u64, 5, 20, 100, 500] {
        // At least 2000 packets and 0.3 s, so a preemption of a few milliseconds by another
        // process is a small part of the run.
        let messages = (300_000 / gap_us).max(2000);
        for spin_us in [0u64, 2, 5, 10, 20, 50] {
            let mut p = Producer::create(RingConfig::with_capacity(BUFFER)).unwrap();
            let fds = p.served_ring().unwrap().into_fds();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--spin-child", &(spin_us * 1000).to_string()])
                .env(RingFds::ENV, fds.export_for_child().unwrap())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            drop(fds);
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            let gap = Duration::from_micros(gap_us);
            let mut next = Instant::now();
            for seq in 0..messages {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                next += gap;
                let buf = p.reserve(16, TYPE_DATA, 0).unwrap();
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                buf[8..].copy_from_slice(&wall_ns().to_le_bytes());
                p.publish();
            }
            p.reserve(16, TYPE_STOP, 0).unwrap().fill(0);
            p.publish();
            line.clear();
            out.read_line(&mut line).unwrap();
            assert!(child.wait().unwrap().success());
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "bench": "spin",
                    "gap_us": gap_us,
                    "spin_us": spin_us,
                    "p50_ns": v[0],
                    "p99_ns": v[1],
                    "consumer_cpu_ns_per_packet": v[2].round(),
                    "build": build_profile(),
                })
            );
        }
    }
}

/// The consumer of `--compare-spin`, spinning `spin` nanoseconds before it sleeps.
fn spin_child(spin: u64) {
    let _ = pin_to_cpu(CHILD_CPU);
    let mut c = Consumer::from_fds(RingFds::from_env().unwrap()).unwrap();
    c.set_spin(Duration::from_nanos(spin));
    let mut latencies = Vec::new();
    println!("ready");
    let cpu0 = cpu_ns();
    'outer: loop {
        while let Some(rec) = c.read().unwrap() {
            if rec.record_type() == TYPE_STOP {
                break 'outer;
            }
            let sent = rec.payload().read_u64_le(8).unwrap();
            latencies.push(wall_ns().saturating_sub(sent));
        }
        c.release();
        let r = c.wait(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(r, Readiness::Ready);
    }
    let cpu = cpu_ns() - cpu0;
    let n = latencies.len();
    latencies.sort_unstable();
    println!(
        "{} {} {}",
        latencies[n / 2],
        latencies[n * 99 / 100],
        cpu as f64 / n as f64
    );
}

/// Copy out of a ring payload (atomic word loads) against memcpy of the same bytes.
fn compare_copy() {
    for size in [64, 256, 1024, 2048, 4096, 16384, 65536] {
        let mut p = Producer::create(RingConfig::with_capacity(BUFFER)).unwrap();
        let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
        let src = vec![7u8; size];
        let mut dst = vec![0u8; size];
        p.send(1, 0, &src).unwrap();
        let rec = c.read().unwrap().unwrap();
        let payload = rec.payload();
        let iters = (256 * 1024 * 1024 / size).max(1000);
        let mut ratios = Vec::new();
        for _round in 0..5 {
            let t = Instant::now();
            for _ in 0..iters {
                payload.copy_to_slice(std::hint::black_box(&mut dst));
            }
            let view = t.elapsed();
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(&mut dst).copy_from_slice(std::hint::black_box(&src));
            }
            let memcpy = t.elapsed();
            ratios.push((view.as_secs_f64(), memcpy.as_secs_f64()));
        }
        ratios.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
        let (view, memcpy) = ratios[2];
        let gbs = |s: f64| (iters * size) as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({
                "bench": "copy",
                "size": size,
                "view_gb_per_s": (gbs(view) * 100.0).round() / 100.0,
                "memcpy_gb_per_s": (gbs(memcpy) * 100.0).round() / 100.0,
                "view_time_over_memcpy": (view / memcpy * 100.0).round() / 100.0,
            })
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child_main(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--spin-child") {
        return spin_child(args[i + 1].parse().unwrap());
    }
    // Count CPUs before pinning: afterwards this process sees only one.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 || pin_to_cpu(PARENT_CPU).is_err() {
        eprintln!(
            "ipc bench: warning: fewer than 2 CPUs or pinning failed; results are not comparable"
        );
    }
    if let Some(i) = args.iter().position(|a| a == "--loop") {
        return single_thread_loop(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "--compare-spin") {
        return compare_spin();
    }
    if args.iter().any(|a| a == "--first-packet") {
        return first_packet();
    }
    if args.iter().any(|a| a == "--compare-copy") {
        return compare_copy();
    }
    let compare_wrap = args.iter().any(|a| a == "--compare-wrap");
    let transports: Vec<Transport> = if compare_wrap {
        vec![
            Transport::Ring(WrapMode::Pad),
            Transport::Ring(WrapMode::Mirror),
        ]
    } else {
        vec![
            Transport::Ring(WrapMode::default()),
            Transport::Unix,
            Transport::Pipe,
            Transport::Line,
            Transport::Bare,
        ]
    };
    if build_profile() != "app" {
        eprintln!(
            "ipc bench: warning: built with the `{}` profile, not `app`: the figures are not those \
             of an application that links edgegw-ring (run with `--profile app`)",
            build_profile()
        );
    }
    // `--only MODE[:SIZE[:BATCH]]` restricts the run (for quick experiments).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    for mode in [Mode::Throughput, Mode::BusyLatency, Mode::BlockLatency] {
        for size in SIZES {
            let mut subjects = subjects(mode, &transports);
            if let Some(o) = &only {
                let mut it = o.split(':');
                if it.next() != Some(mode.name())
                    || it.next().is_some_and(|s| s != size.to_string())
                {
                    continue;
                }
                if let Some(b) = it.next() {
                    subjects.retain(|s| {
                        s.batch.to_string() == b
                            || !matches!(s.transport, Transport::Ring(_) | Transport::Bare)
                    });
                }
            }
            // Interleave repetitions of all subjects, then report each one's median repetition:
            // the machine is shared, so noise hits every transport alike.
            let mut runs: Vec<Vec<Measurement>> = subjects.iter().map(|_| Vec::new()).collect();
            for _ in 0..reps() {
                for (i, &s) in subjects.iter().enumerate() {
                    runs[i].push(measure(s, mode, size));
                }
            }
            for (i, &s) in subjects.iter().enumerate() {
                let mut r = std::mem::take(&mut runs[i]);
                r.sort_by(|a, b| match mode {
                    Mode::Throughput => a.msgs_per_s.total_cmp(&b.msgs_per_s),
                    _ => a.p50_ns.unwrap_or(0.0).total_cmp(&b.p50_ns.unwrap_or(0.0)),
                });
                emit(s, mode, size, &r[r.len() / 2], compare_wrap);
            }
        }
    }
}
