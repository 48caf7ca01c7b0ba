//! The rings as the control plane sees them: each ring's config, its two attach servers and
//! its counters. It creates them, serves their attach sockets, applies a reloaded ring's allow
//! list, and replaces a ring its consumer broke (or its producer finished) with a fresh one of
//! the next generation.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;

use anyhow::{Context, Result};
use edgegw_ring::{
    AllowList, Consumer, OwnerCounters, Producer, Protection, Refusal, RingConfig as RingLayout,
    RingFds, RingServer, ServerEvent, TakenBack,
};
use tokio::io::unix::AsyncFd;

use crate::config::{Config, RingConfig};
use crate::gateway::{Gateway, GatewayEvent, RingCounter, RingEndpoints, Stats};
use crate::paths::Dirs;
use crate::sys::SystemdSockets;

use super::fdstore;

/// A ring's control-plane side: its config and the two attach servers.
#[derive(Debug)]
pub struct RingState {
    config: RingConfig,
    ingress: AttachServer,
    reply: AttachServer,
    /// The ring's counters (`gateway::RingCounter`), shared with the TLS thread and served by
    /// both attach servers.
    counters: Arc<OwnerCounters>,
}

/// A ring attach server and the readiness of its epoll fd.
#[derive(Debug)]
struct AttachServer {
    server: RingServer,
    ready: AsyncFd<OwnedFd>,
}

impl AttachServer {
    fn new(server: RingServer) -> Result<Self> {
        let fd = server
            .as_fd()
            .try_clone_to_owned()
            .context("duplicate the ring server's epoll fd")?;
        Ok(AttachServer {
            server,
            ready: crate::sys::async_fd(fd).context("register the ring server with the runtime")?,
        })
    }
}

/// Every ring, by name.
#[derive(Debug, Default)]
pub struct Rings {
    rings: HashMap<String, RingState>,
}

impl Rings {
    /// The rings that run, with their capacities (which cannot change until a restart).
    pub fn capacities(&self) -> HashMap<String, usize> {
        self.rings
            .iter()
            .map(|(name, ring)| (name.clone(), ring.config.capacity))
            .collect()
    }

    /// Serves rings the TLS thread now has (until then, consumers' connects wait in the
    /// backlog of their sockets).
    pub fn add(&mut self, new: Vec<RingState>) {
        for ring in new {
            self.rings.insert(ring.config.name.clone(), ring);
        }
    }

    /// Applies a reloaded config's allow lists. A ring it no longer names stays until restart
    /// (its consumer may still be reading).
    pub fn update(&mut self, config: &Config) {
        for (name, ring) in self.rings.iter_mut() {
            match config.ring(name) {
                Some(new) => {
                    let allow = allow_list(new);
                    ring.ingress.server.set_allow(allow.clone());
                    ring.reply.server.set_allow(allow);
                    for server in [&ring.ingress.server, &ring.reply.server] {
                        if let Err(e) = restrict_socket(server.path(), new) {
                            log::error!("{e:#}");
                        }
                    }
                    ring.config = new.clone();
                }
                None => {
                    log::info!("ring `{name}` is no longer configured; it stays until restart")
                }
            }
        }
    }

    /// Each ring's counters by name, as `edgegw ring stat --json` shows them.
    pub fn counters(&self) -> serde_json::Map<String, serde_json::Value> {
        self.rings
            .iter()
            .map(|(name, ring)| {
                let named = RingCounter::named(&ring.counters.snapshot());
                (name.clone(), named.into())
            })
            .collect()
    }

    /// How many rings there are, and how many have a consumer attached (to the ingress side).
    pub fn attached(&self) -> (usize, usize) {
        let attached = self
            .rings
            .values()
            .filter(|r| r.ingress.server.peer_attached())
            .count();
        (self.rings.len(), attached)
    }

    /// Each ring's counters and whether its consumer and reply producer are attached, sorted by
    /// name (`edgegw metrics`).
    pub fn samples(&self) -> Vec<super::status::RingSamples<'_>> {
        let mut samples: Vec<_> = self
            .rings
            .iter()
            .map(|(name, ring)| {
                let values = ring.counters.snapshot();
                super::status::RingSamples {
                    name,
                    counters: RingCounter::ALL
                        .iter()
                        .map(|c| (c.name(), values[*c as usize]))
                        .collect(),
                    attached: ring.ingress.server.peer_attached(),
                    attached_for: ring.ingress.server.peer_attached_for(),
                    reply_attached: ring.reply.server.peer_attached(),
                    reply_attached_for: ring.reply.server.peer_attached_for(),
                }
            })
            .collect();
        samples.sort_by_key(|s| s.name);
        samples
    }

    /// Each ring as `edgegw status --json` shows it: capacity, generation, whether a consumer
    /// and a reply producer are attached, and the counters.
    pub fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        self.rings
            .iter()
            .map(|(name, ring)| {
                let values = ring.counters.snapshot();
                let flow = |c: RingCounter| values[c as usize];
                let value = serde_json::json!({
                    "capacity": ring.config.capacity,
                    "generation": ring.ingress.server.ring().generation(),
                    "consumer_attached": ring.ingress.server.peer_attached(),
                    "consumer_attached_since": attached_since(&ring.ingress.server),
                    "consumer_attached_seconds": attached_seconds(&ring.ingress.server),
                    "reply_producer_attached": ring.reply.server.peer_attached(),
                    "reply_producer_attached_since": attached_since(&ring.reply.server),
                    "reply_producer_attached_seconds": attached_seconds(&ring.reply.server),
                    "flow_control": {
                        "credit_stalls": flow(RingCounter::CreditStalls),
                        "credits_for_unknown_connections":
                            flow(RingCounter::CreditsForUnknownConnections),
                        "excess_credits": flow(RingCounter::ExcessCredits),
                        "reply_window_overruns": flow(RingCounter::ReplyWindowOverruns),
                        "credit_connections": flow(RingCounter::CreditConnections),
                        "reply_bytes_held": flow(RingCounter::ReplyBytesHeld),
                    },
                    "counters": RingCounter::named(&values),
                });
                (name.clone(), value)
            })
            .collect()
    }

    /// Waits until an attach server has work: a connection, a hello, a hang-up.
    pub async fn ready(&mut self) {
        if self.rings.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            let mut any = false;
            for ring in self.rings.values_mut() {
                for server in [&mut ring.ingress, &mut ring.reply] {
                    if let Poll::Ready(Ok(mut guard)) = server.ready.poll_read_ready(cx) {
                        // Cleared before processing: process() drains everything, and anything
                        // that arrives after it makes the epoll fd readable again.
                        guard.clear_ready();
                        any = true;
                    }
                }
            }
            if any {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Does whatever work the attach servers have now (also expires silent connections, so it
    /// runs periodically too), and replaces the rings a consumer was found to have broken.
    pub fn serve(&mut self, gateway: &Gateway) {
        let mut broken = Vec::new();
        let mut changed = Vec::new();
        for (name, ring) in self.rings.iter_mut() {
            for (direction, server) in [
                (Direction::Ingress, &mut ring.ingress),
                (Direction::Reply, &mut ring.reply),
            ] {
                match server.server.process() {
                    Ok(events) => {
                        for event in events {
                            if let ServerEvent::RingBroken { generation, reason } = &event {
                                broken.push((name.clone(), direction, *generation, reason.clone()));
                            } else {
                                log_attach_event(name, direction, &event);
                                if direction == Direction::Ingress
                                    && matches!(
                                        event,
                                        ServerEvent::Attached { .. } | ServerEvent::Detached { .. }
                                    )
                                {
                                    changed.push(name.clone());
                                }
                            }
                        }
                    }
                    Err(e) => log::warn!("ring `{name}` {direction} attach server: {e}"),
                }
            }
        }
        // Windows belong to the consumer that turned them on: one that left takes them along.
        changed.dedup();
        for ring in changed {
            gateway.consumer_changed(&ring);
        }
        for (ring, direction, generation, reason) in broken {
            self.replace(gateway, &ring, direction, generation, Some(reason));
        }
    }

    /// Acts on what the TLS thread found: a ring to replace.
    pub fn on_gateway_event(&mut self, gateway: &Gateway, event: GatewayEvent) {
        let (ring, direction, generation, why) = match event {
            GatewayEvent::IngressRingBroken {
                ring,
                generation,
                reason,
            } => (ring, Direction::Ingress, generation, Some(reason)),
            GatewayEvent::ReplyRingBroken {
                ring,
                generation,
                reason,
            } => (ring, Direction::Reply, generation, Some(reason)),
            GatewayEvent::ReplyRingFinished { ring, generation } => {
                (ring, Direction::Reply, generation, None)
            }
        };
        self.replace(gateway, &ring, direction, generation, why);
    }

    /// Replaces a ring's ingress or reply ring of `generation` (broken by its consumer:
    /// `broken` says how; or a reply ring its producer finished) with a fresh one of the next
    /// generation: served on the same socket (the consumer is disconnected and attaches again)
    /// and handed to the TLS thread, which moves an ingress ring's unreleased records over. A
    /// ring already replaced is left alone (the TLS thread and the attach server may both
    /// report the same one).
    fn replace(
        &mut self,
        gateway: &Gateway,
        name: &str,
        direction: Direction,
        generation: u64,
        broken: Option<String>,
    ) {
        let Some(state) = self.rings.get_mut(name) else {
            return;
        };
        let server = match direction {
            Direction::Ingress => &mut state.ingress.server,
            Direction::Reply => &mut state.reply.server,
        };
        if server.ring().generation() != generation {
            return;
        }
        let stats = gateway.stats_handle();
        if let Some(reason) = &broken {
            let (counter, ring_counter, lost) = match direction {
                Direction::Ingress => (
                    &stats.corrupt_ingress_rings,
                    RingCounter::ReplacedIngressRings,
                    "the records it had not released are delivered again in the fresh ring",
                ),
                Direction::Reply => (
                    &stats.corrupt_reply_rings,
                    RingCounter::ReplacedReplyRings,
                    "the replies it had written there are lost",
                ),
            };
            Stats::bump(counter);
            ring_counter.add(&state.counters, 1);
            log::error!(
                ring = name;
                "ring `{name}` {direction}: the consumer broke the ring ({reason}); it is \
                 disconnected and a fresh ring takes its place; {lost}"
            );
        }
        let layout = RingLayout::with_capacity(state.config.capacity)
            .protection(server.ring().protection())
            .generation(generation + 1);
        let config = &state.config;
        let renewed = match direction {
            Direction::Ingress => Producer::create(layout)
                .inspect(Producer::prefault)
                .and_then(|fresh| Ok((fresh.served_ring()?, fresh)))
                .map(|(served, fresh)| {
                    store(config, direction, fresh.fds());
                    log_replaced(name, direction, server.replace_ring(served));
                    gateway.renew_ingress(name, fresh)
                }),
            Direction::Reply => Consumer::create(layout)
                .inspect(Consumer::prefault)
                .and_then(|fresh| Ok((fresh.served_ring()?, fresh)))
                .map(|(served, fresh)| {
                    store(config, direction, fresh.fds());
                    log_replaced(name, direction, server.replace_ring(served));
                    gateway.renew_reply(name, fresh)
                }),
        };
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("ring `{name}` {direction}: {e}"),
            Err(e) => log::error!("ring `{name}` {direction}: cannot create a fresh ring: {e}"),
        }
    }
}

/// A ring's two directions, as the logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Reply,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Reply => "reply",
        })
    }
}

/// When the peer of `server` attached (RFC 3339), if one is.
fn attached_since(server: &RingServer) -> Option<String> {
    let age = server.peer_attached_for()?;
    std::time::SystemTime::now()
        .checked_sub(age)
        .map(crate::log::rfc3339)
}

/// For how many whole seconds the peer of `server` has been attached, if one is.
fn attached_seconds(server: &RingServer) -> Option<u64> {
    server.peer_attached_for().map(|d| d.as_secs())
}

fn log_replaced(ring: &str, direction: Direction, detached: Option<ServerEvent>) {
    if let Some(ServerEvent::Detached { pid }) = detached {
        log::info!("ring `{ring}` {direction}: pid {pid} disconnected; it may attach again");
    }
}

fn log_attach_event(ring: &str, direction: Direction, event: &ServerEvent) {
    match event {
        ServerEvent::Attached { pid, uid, gid } => {
            log::info!("ring `{ring}` {direction}: pid {pid} (uid {uid}, gid {gid}) attached")
        }
        ServerEvent::Detached { pid } => {
            log::info!("ring `{ring}` {direction}: pid {pid} detached; unread records are kept")
        }
        ServerEvent::Refused { pid, uid, reason } => {
            let (kind, level, why) = refusal(reason);
            log::log!(target: kind, level, "ring `{ring}` {direction}: refused pid {pid} (uid {uid}): {why}")
        }
        other => log::debug!("ring `{ring}` {direction}: {other:?}"),
    }
}

/// How the daemon words an attach it refused, at which level, and under which rate-limit key (a
/// flood of one kind must not hide the others).
fn refusal(reason: &Refusal) -> (&'static str, log::Level, String) {
    use log::Level::{Info, Warn};
    match reason {
        Refusal::Malformed => (
            "edgegw::attach::malformed",
            Warn,
            "its hello is malformed (not an edgegw ring hello)".into(),
        ),
        Refusal::VersionMismatch { server, client } => (
            "edgegw::attach::version",
            Warn,
            format!("it speaks attach protocol version {client}, this daemon speaks {server}"),
        ),
        Refusal::NotAllowed { uid, gid } => (
            "edgegw::attach::not-allowed",
            Warn,
            format!(
                "neither uid {uid}, gid {gid} nor one of its supplementary groups is on the ring's allow list"
            ),
        ),
        Refusal::WrongRole { offered, requested } => (
            "edgegw::attach::role",
            Warn,
            format!("it asked to attach as the {requested}; this socket serves the {offered}"),
        ),
        Refusal::NeedsSealProtection { client } => (
            "edgegw::attach::version",
            Warn,
            format!(
                "it speaks attach protocol version {client}, which cannot read a ring with fd \
                 protection; upgrade its ring library, or set protection = \"seal\" on the ring \
                 (a ring with seal protection does not continue across a restart)"
            ),
        ),
        Refusal::Busy => (
            "edgegw::attach::busy",
            Info,
            "another peer is attached, or the ring is being replaced; it may try again".into(),
        ),
        other => ("edgegw::attach::refused", Warn, other.to_string()),
    }
}

/// Who may connect to a ring socket: the daemon's user and group, and the ring's allow list
/// (mode 0660 and a POSIX ACL entry for each listed user and group), so a stranger cannot even
/// say hello; the allow list is checked again on the hello (SO_PEERCRED). On a filesystem
/// without ACLs, a ring that lists other users keeps its sockets open to everyone (0666) so they
/// can connect, and the log says so once.
fn restrict_socket(path: &Path, ring: &RingConfig) -> Result<()> {
    let listed = crate::sys::restrict_to(path, &ring.allow_uids, &ring.allow_gids)
        .with_context(|| format!("ring `{}`: permissions of {}", ring.name, path.display()))?;
    if !listed {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("ring `{}`: chmod {}", ring.name, path.display()))?;
        log::warn!(
            "ring `{}`: the filesystem of {} has no POSIX ACLs, so the socket is open to every \
             local user (0666) for allow_uids/allow_gids to connect; the allow list still \
             decides who attaches",
            ring.name,
            path.display()
        );
    }
    Ok(())
}

fn allow_list(ring: &RingConfig) -> AllowList {
    let mut allow = AllowList::current_user();
    for uid in &ring.allow_uids {
        allow = allow.uid(*uid);
    }
    for gid in &ring.allow_gids {
        allow = allow.gid(*gid);
    }
    allow
}

/// Creates a ring pair (ingress: we produce; reply: we consume), or takes it back from systemd's
/// fd store (a restart: see [`take_back`]), and binds its two attach sockets, registered with
/// the runtime (so inside one: the control loop's, or its blocking pool's) but served only once
/// [`Rings::add`] has them. A ring with fd protection goes into the fd store.
pub fn create(
    ring: &RingConfig,
    dirs: &Dirs,
    systemd: &SystemdSockets,
) -> Result<(RingEndpoints, RingState)> {
    let counters = Arc::new(OwnerCounters::default());
    let layout = RingLayout::with_capacity(ring.capacity).protection(ring.protection);
    let ingress = take_back_ingress(ring, systemd, &counters)?;
    let reply = take_back_reply(ring, systemd, &counters)?;
    let (ingress, ingress_continued) = match ingress {
        Some(taken) => taken,
        None => (
            Producer::create(layout.generation(1))
                .with_context(|| format!("ring `{}`: create", ring.name))?,
            false,
        ),
    };
    let (reply, reply_continued) = match reply {
        Some(taken) => taken,
        None => (
            Consumer::create(layout)
                .with_context(|| format!("ring `{}`: create reply ring", ring.name))?,
            false,
        ),
    };
    // The ring's memory is taken now, not page by page during the first lap (which costs the
    // first packets a page fault each): capacity bytes each way, resident from the start.
    ingress.prefault();
    reply.prefault();
    // A continued ring's fds are in the store already (the ones taken back).
    for (direction, fds, continued) in [
        (Direction::Ingress, ingress.fds(), ingress_continued),
        (Direction::Reply, reply.fds(), reply_continued),
    ] {
        if !continued {
            store(ring, direction, fds);
        }
    }
    let allow = allow_list(ring);
    let mut ingress_server = RingServer::bind(
        dirs.ring_socket(&ring.name),
        ingress.served_ring()?,
        allow.clone(),
    )
    .with_context(|| format!("ring `{}`: serve", ring.name))?;
    let mut reply_server =
        RingServer::bind(dirs.reply_socket(&ring.name), reply.served_ring()?, allow)
            .with_context(|| format!("ring `{}`: serve reply ring", ring.name))?;
    for server in [&mut ingress_server, &mut reply_server] {
        restrict_socket(server.path(), ring)?;
        server.set_owner_counters(counters.clone());
    }
    log::info!(
        ring = ring.name.as_str();
        "ring `{}`: {} bytes each way, protection \"{}\"; consumers attach at {}",
        ring.name,
        ring.capacity,
        ring.protection,
        ingress_server.path().display()
    );
    Ok((
        RingEndpoints {
            ingress,
            reply,
            counters: counters.clone(),
        },
        RingState {
            config: ring.clone(),
            ingress: AttachServer::new(ingress_server)?,
            reply: AttachServer::new(reply_server)?,
            counters,
        },
    ))
}

/// Puts a ring direction's fds into systemd's fd store (a ring with fd protection), or takes
/// its names out (seal protection: it cannot continue).
fn store(ring: &RingConfig, direction: Direction, fds: Option<&edgegw_ring::RingFds>) {
    let direction = direction.to_string();
    match (ring.protection, fds) {
        (Protection::Fd, Some(fds)) => fdstore::store(&ring.name, &direction, fds),
        _ => fdstore::remove(&ring.name, &direction),
    }
}

/// The stored fds of one direction of `ring`, if systemd kept all four and the ring still has
/// fd protection (a ring now configured `protection = "seal"` starts fresh).
fn stored(ring: &RingConfig, direction: Direction, systemd: &SystemdSockets) -> Option<RingFds> {
    let fds = systemd.take_stored(&fdstore::names(&ring.name, &direction.to_string()))?;
    if ring.protection != Protection::Fd {
        log::info!(
            ring = ring.name.as_str();
            "ring `{}` {direction}: systemd kept it, but the ring is now configured \
             protection = \"seal\": a fresh ring takes its place",
            ring.name
        );
        return None;
    }
    Some(RingFds::from_array(fds))
}

/// The ingress ring of the daemon's previous life, continued if it is consistent (FORMAT.md
/// section 7, "Restarts"), with `true`; `None` if there is none. A stored ring that fails the
/// checks is replaced by a fresh one of the next generation holding the records that passed
/// them (with `false`: it is not in the store yet), logged once and counted
/// (`replaced_ingress_rings`).
fn take_back_ingress(
    ring: &RingConfig,
    systemd: &SystemdSockets,
    counters: &OwnerCounters,
) -> Result<Option<(Producer, bool)>> {
    let Some(fds) = stored(ring, Direction::Ingress, systemd) else {
        return Ok(None);
    };
    let name = ring.name.as_str();
    match Producer::take_back(fds) {
        Ok(TakenBack::Continued(mut old)) if old.capacity() != ring.capacity => {
            // The capacity changed with the restart: a fresh ring of the new size, with what
            // the old one held that was not released.
            let layout = RingLayout::with_capacity(ring.capacity)
                .protection(ring.protection)
                .generation(old.generation() + 1);
            let mut fresh =
                Producer::create(layout).with_context(|| format!("ring `{name}`: create"))?;
            match old.move_unreleased_to(&mut fresh) {
                Ok(moved) => log::info!(
                    ring = name;
                    "ring `{name}` ingress: its capacity changed from {} to {} bytes; a fresh \
                     ring takes its place with the {} records not released",
                    old.capacity(),
                    ring.capacity,
                    moved.records
                ),
                Err(e) => log::error!(
                    ring = name;
                    "ring `{name}` ingress: its capacity changed from {} to {} bytes; the \
                     records not released do not fit the fresh ring and are lost ({e})",
                    old.capacity(),
                    ring.capacity
                ),
            }
            Ok(Some((fresh, false)))
        }
        Ok(TakenBack::Continued(producer)) => {
            let (published, released) = producer.positions();
            log::info!(
                ring = name;
                "ring `{name}` ingress: continues from before the restart (generation {}, \
                 {} unreleased bytes)",
                producer.generation(),
                published - released
            );
            Ok(Some((producer, true)))
        }
        Ok(TakenBack::Unfit {
            reason,
            generation,
            salvaged,
        }) => {
            RingCounter::ReplacedIngressRings.add(counters, 1);
            let layout = RingLayout::with_capacity(ring.capacity)
                .protection(ring.protection)
                .generation(generation.map_or(1, |g| g + 1));
            let mut fresh =
                Producer::create(layout).with_context(|| format!("ring `{name}`: create"))?;
            let mut moved = 0usize;
            for record in &salvaged {
                if fresh
                    .send(record.ty, record.flags, &record.payload)
                    .is_err()
                {
                    break;
                }
                moved += 1;
            }
            fresh.publish();
            log::error!(
                ring = name;
                "ring `{name}` ingress: the ring kept across the restart is not consistent \
                 ({reason}); a fresh ring takes its place with the {moved} of {} records that \
                 passed the checks",
                salvaged.len()
            );
            Ok(Some((fresh, false)))
        }
        Err(e) => {
            RingCounter::ReplacedIngressRings.add(counters, 1);
            log::error!(
                ring = name;
                "ring `{name}` ingress: cannot take back the ring kept across the restart ({e}); \
                 a fresh ring takes its place"
            );
            Ok(None)
        }
    }
}

/// The reply ring of the daemon's previous life, continued if it is consistent (with `true`);
/// `None` if
/// there is none or it is not (then what its producer wrote there is lost, as for any broken
/// reply ring: logged once and counted, `replaced_reply_rings`).
fn take_back_reply(
    ring: &RingConfig,
    systemd: &SystemdSockets,
    counters: &OwnerCounters,
) -> Result<Option<(Consumer, bool)>> {
    let Some(fds) = stored(ring, Direction::Reply, systemd) else {
        return Ok(None);
    };
    let name = ring.name.as_str();
    let why = match Consumer::take_back(fds) {
        Ok(TakenBack::Continued(consumer)) if consumer.capacity() != ring.capacity => format!(
            "its capacity changed from {} to {} bytes",
            consumer.capacity(),
            ring.capacity
        ),
        Ok(TakenBack::Continued(consumer)) => {
            log::info!(
                ring = name;
                "ring `{name}` reply: continues from before the restart (generation {})",
                consumer.generation()
            );
            return Ok(Some((consumer, true)));
        }
        Ok(TakenBack::Unfit { reason, .. }) => reason,
        Err(e) => e.to_string(),
    };
    RingCounter::ReplacedReplyRings.add(counters, 1);
    log::error!(
        ring = name;
        "ring `{name}` reply: the ring kept across the restart is not consistent ({why}); a \
         fresh ring takes its place and what its producer had written there is lost"
    );
    Ok(None)
}

/// Releases the fds systemd kept for rings and listening sockets the config no longer names
/// (`FDSTOREREMOVE=1`).
pub fn release_unclaimed(systemd: &SystemdSockets) {
    for name in systemd.take_unclaimed() {
        log::info!("systemd kept `{name}`, which the config no longer names; released");
        fdstore::remove_named(&name);
    }
}
