//! The rings in systemd's fd store (`sd_pid_notify_with_fds(3)`: `FDSTORE=1`, `FDNAME=`,
//! `FDPOLL=0`), so a restarted daemon takes them back and continues them (FORMAT.md section 7,
//! "Restarts"). Each direction of a ring is four fds, named
//! `ring.<name>.<ingress|reply>.<region|consumer|data|space>`; systemd hands them back at the
//! next start in `$LISTEN_FDS`/`$LISTEN_FDNAMES`, where [`crate::sys::SystemdSockets`] sets them
//! aside by name. Listening sockets the daemon bound to a fixed port go in too, as `tcp.<address>`
//! (`SocketTable::store_changes`), so that they keep listening across a restart. Without `$NOTIFY_SOCKET` (no systemd), nothing is stored and a restart keeps
//! nothing of the rings. The unit allows the store with `FileDescriptorStoreMax=`.

use std::os::fd::BorrowedFd;

use edgegw_ring::RingFds;
use sd_notify::NotifyState;

/// What an fd-store name says: the ring, the direction and which of the four fds.
pub const PREFIX: &str = "ring.";

/// The names of listening sockets the daemon bound itself: `tcp.<address>`, with `_` for `:`.
pub const LISTENER_PREFIX: &str = "tcp.";

/// The four parts of a ring direction, in protocol order (FORMAT.md section 6).
pub const PARTS: [&str; 4] = ["region", "consumer", "data", "space"];

/// The fd-store names of one direction of a ring, in protocol order.
pub fn names(ring: &str, direction: &str) -> [String; 4] {
    PARTS.map(|part| format!("{PREFIX}{ring}.{direction}.{part}"))
}

/// The ring a stored fd's name belongs to (ring names may contain dots; the last two fields
/// are the direction and the part).
pub fn ring_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut fields = rest.rsplitn(3, '.');
    let (_part, _direction, ring) = (fields.next()?, fields.next()?, fields.next()?);
    Some(ring)
}

/// Whether systemd listens (`$NOTIFY_SOCKET`): without it there is no store.
pub fn available() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Puts one direction of a ring into the store, replacing what was stored under its names.
/// Failures are logged: the ring works, it just will not survive a restart.
pub fn store(ring: &str, direction: &str, fds: &RingFds) {
    if !available() {
        return;
    }
    let names = names(ring, direction);
    for name in &names {
        remove_named(name);
    }
    for (name, fd) in names.iter().zip(fds.as_array()) {
        if let Err(e) = send(name, fd) {
            log::warn!(
                ring = ring;
                "ring `{ring}` {direction}: cannot put it into systemd's fd store ({e}); a \
                 restart will not continue it (is FileDescriptorStoreMax= set in the unit?)"
            );
            return;
        }
    }
}

/// Puts one fd into the store under `name`, replacing what was stored under it (a listening
/// socket). Failures are logged.
pub fn store_one(name: &str, fd: BorrowedFd<'_>) {
    if !available() {
        return;
    }
    remove_named(name);
    if let Err(e) = send(name, fd) {
        log::warn!(
            "cannot put `{name}` into systemd's fd store ({e}); a restart will close it for the \
             moment it takes"
        );
    }
}

/// Removes one direction of a ring from the store (a ring with seal protection, which cannot
/// continue).
pub fn remove(ring: &str, direction: &str) {
    if !available() {
        return;
    }
    for name in names(ring, direction) {
        remove_named(&name);
    }
}

/// Removes every fd stored under `name`.
pub fn remove_named(name: &str) {
    if !available() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
        log::warn!("cannot remove `{name}` from systemd's fd store: {e}");
    }
}

fn send(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // FDPOLL=0: systemd must not watch the memfds and eventfds (an eventfd turns readable, and
    // systemd would drop an fd that reports an error or hang-up).
    sd_notify::notify_with_fds(
        &[
            NotifyState::FdStore,
            NotifyState::FdName(name),
            NotifyState::Custom("FDPOLL=0"),
        ],
        &[fd],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_name_says_its_ring_even_with_dots_in_the_ring_name() {
        let [region, ..] = names("edge.v2", "ingress");
        assert_eq!(region, "ring.edge.v2.ingress.region");
        assert_eq!(ring_of(&region), Some("edge.v2"));
        assert_eq!(ring_of("ring.a.reply.space"), Some("a"));
        assert_eq!(ring_of("ring.reply.space"), None);
        assert_eq!(ring_of("tls"), None);
    }
}
