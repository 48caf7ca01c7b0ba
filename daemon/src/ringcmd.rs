//! `edgegw ring stat|tail|echo`: tools for a ring's operator and an example consumer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use edgegw_ring::{Consumer, Producer, Readiness};

use crate::cli::RingAction;
use crate::config::Config;
use crate::gateway::RingCounter;
use crate::paths::Dirs;
use crate::proto::{self, OpenInfo, DATA_HEADER_LEN};

/// Runs a ring tool. `ring` is a ring name from `config` or a socket path.
pub fn ring(action: RingAction, ring: &str, config: &Config) -> Result<()> {
    let dirs = Dirs::resolve(&config.daemon)?;
    let socket = socket_path(ring, &dirs);
    match action {
        RingAction::Stat { json } => {
            let stat = edgegw_ring::tools::stat(&socket)?;
            // The owner counters of a ring the daemon serves, by name (FORMAT.md section 6).
            let counters = RingCounter::named(&stat.owner_counters);
            if json {
                let mut value = serde_json::to_value(&stat)?;
                value["counters"] = counters.into();
                println!("{value}");
            } else {
                let counters: Vec<String> =
                    counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{stat}\ncounters    {}", counters.join(" "));
            }
        }
        RingAction::Tail { count } => {
            let options = edgegw_ring::tools::TailOptions {
                max_packets: count,
                ..Default::default()
            };
            let stdout = std::io::stdout();
            let (packets, end) = edgegw_ring::tools::tail(&socket, stdout.lock(), &options)?;
            eprintln!("{packets} packet(s); stopped: {end:?}");
        }
        RingAction::Echo => echo(ring, &socket, &reply_path(ring, &dirs))?,
    }
    Ok(())
}

fn socket_path(ring: &str, dirs: &Dirs) -> PathBuf {
    if ring.contains('/') {
        PathBuf::from(ring)
    } else {
        dirs.ring_socket(ring)
    }
}

fn reply_path(ring: &str, dirs: &Dirs) -> PathBuf {
    match ring.strip_suffix(".sock") {
        Some(stem) if ring.contains('/') => PathBuf::from(format!("{stem}.reply.sock")),
        _ => dirs.reply_socket(ring),
    }
}

/// The example consumer: every DATA packet goes back to its connection, unchanged. Survives
/// daemon restarts: when the daemon goes away it waits and attaches again.
fn echo(name: &str, ingress_path: &std::path::Path, reply_path: &std::path::Path) -> Result<()> {
    let mut announced_wait = false;
    loop {
        let attached =
            Consumer::attach(ingress_path).and_then(|c| Ok((c, Producer::attach(reply_path)?)));
        let (mut consumer, mut producer) = match attached {
            Ok(pair) => pair,
            Err(e) if is_retryable(&e) => {
                if !announced_wait {
                    eprintln!("edgegw ring echo: waiting for ring `{name}` ({e})");
                    announced_wait = true;
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("attach to ring `{name}`")),
        };
        announced_wait = false;
        eprintln!(
            "edgegw ring echo: attached to `{name}` (generation {}); echoing",
            consumer.generation()
        );
        match echo_attached(&mut consumer, &mut producer, reply_path)? {
            Readiness::PeerGone | Readiness::Finished => {
                eprintln!(
                    "edgegw ring echo: the daemon went away (or replaced the ring); attaching again"
                );
            }
            other => eprintln!("edgegw ring echo: {other:?}"),
        }
    }
}

fn is_retryable(e: &edgegw_ring::Error) -> bool {
    match e {
        edgegw_ring::Error::Attach { .. } => true,
        edgegw_ring::Error::Refused { reason, .. } => *reason == edgegw_ring::Refusal::Busy,
        _ => false,
    }
}

/// Echoes until the daemon goes away. Each batch of ingress records is released with one store,
/// and the replies written for it are published with one store.
fn echo_attached(
    consumer: &mut Consumer,
    producer: &mut Producer,
    reply_path: &std::path::Path,
) -> Result<Readiness> {
    loop {
        if producer.peer_gone() {
            // The daemon gave up our reply ring (it found it corrupt) or is going away: attach
            // to the reply socket again; if the daemon is gone, so is the ingress ring.
            match Producer::attach(reply_path) {
                Ok(fresh) => {
                    eprintln!(
                        "edgegw ring echo: the daemon replaced the reply ring; attached again"
                    );
                    *producer = fresh;
                }
                Err(e) if is_retryable(&e) => return Ok(Readiness::PeerGone),
                Err(e) => return Err(e).context("attach to the reply ring again"),
            }
        }
        while let Some(record) = consumer.read()? {
            let payload = record.payload();
            let answered = match record.record_type() {
                // Connection id and bytes, copied straight from one ring to the other.
                proto::DATA if payload.len() >= DATA_HEADER_LEN => {
                    send_waiting(producer, proto::DATA, payload.len(), |reply| {
                        payload.copy_to_slice(reply);
                    })?
                }
                proto::OPEN => {
                    if let Some((id, info)) = OpenInfo::decode(&payload.to_vec()) {
                        eprintln!(
                            "connection {id} open: peer {} listener {} sni {:?} alpn {:?} client {:?}",
                            info.peer, info.listener, info.sni, info.alpn, info.client_subject
                        );
                    }
                    None
                }
                proto::CLOSE => match (payload.read_u64_le(0), payload.read_u32_le(8)) {
                    (Some(id), Some(reason)) => {
                        eprintln!("connection {id} closed (reason {reason})");
                        // The client is done sending, so is the echo: the daemon may end it.
                        send_waiting(producer, proto::CLOSE, 8, |reply| {
                            reply.copy_from_slice(&id.to_le_bytes());
                        })?
                    }
                    _ => None,
                },
                other => {
                    eprintln!("skipping record of unknown type {other}");
                    None
                }
            };
            if let Some(end) = answered {
                return Ok(end);
            }
        }
        producer.publish();
        consumer.release();
        match consumer.wait(None)? {
            Readiness::Ready => {}
            other => return Ok(other),
        }
    }
}

/// Writes one reply record, waiting for room if the reply ring is full. `Some(readiness)` if
/// the daemon went away while waiting.
fn send_waiting(
    producer: &mut Producer,
    kind: u16,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<Option<Readiness>> {
    let mut fill = Some(fill);
    loop {
        match producer.reserve(len, kind, 0) {
            Ok(buf) => {
                if let Some(fill) = fill.take() {
                    fill(buf);
                }
                return Ok(None);
            }
            Err(edgegw_ring::Error::Full { .. }) => {
                // Let the daemon see what is done, then wait for room.
                producer.publish();
                match producer.wait_for_space(len, None)? {
                    Readiness::Ready => {}
                    other => return Ok(Some(other)),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
