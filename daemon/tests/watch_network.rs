//! Listeners follow the network: `iface:NAME:PORT` binds every usable address of the interface
//! while it is up, `when-present:ADDR:PORT` the address while it is there. In a network
//! namespace with a veth pair: addresses added and removed, renumbered, the link down and up,
//! IPv6 duplicate address detection finishing, and an rtnetlink flood into ENOBUFS while the
//! daemon is stopped: the listening sockets (`ss -ltn` in the namespace) always converge to
//! what the kernel's addresses say they should be.

mod common;

use common::kernel::{address_churn, Netns};
use common::*;

const IFACE_PORT: u16 = 18443;
const PRESENT_PORT: u16 = 18444;
const PRESENT: &str = "10.77.1.9";

#[test]
#[ignore = "needs root: makes a network namespace with a veth pair"]
fn listeners_follow_addresses_links_and_an_enobufs_resync_in_a_namespace() {
    let ns = Netns::new("net");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listener]]\nname = \"edge\"\n\
         bind = [\"iface:veth0:{IFACE_PORT}\", \"when-present:{PRESENT}:{PRESENT_PORT}\"]\n\
         route = \"sink\"\n\
         [[listener.certificate]]\nself_signed = true\nserver_names = [\"localhost\"]\n\
         [[route]]\nname = \"sink\"\ntcp = \"127.0.0.1:9\"\n\
         [pressure]\nshed = false\n"
    );
    let path = write(dir.path(), "edgegw.toml", &config);
    let mut command = ns.edgegw();
    command.args(["run", "--config", path.to_str().unwrap()]);
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log("watching the network");
    // veth0 has its IPv6 link-local address (once DAD finishes): listened on with its scope.
    ns.converges(&daemon, "start", IFACE_PORT, (PRESENT, PRESENT_PORT));

    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "veth0"]);
    ns.ip(&["addr", "add", "2001:db8:77::1/64", "dev", "veth0"]);
    ns.converges(
        &daemon,
        "IPv4 and IPv6 (after DAD) added",
        IFACE_PORT,
        (PRESENT, PRESENT_PORT),
    );
    assert!(ns
        .listening(&[IFACE_PORT, PRESENT_PORT])
        .contains(&format!("10.77.0.1:{IFACE_PORT}")));

    ns.ip(&["addr", "add", &format!("{PRESENT}/32"), "dev", "veth1"]);
    ns.converges(
        &daemon,
        "the when-present address appeared",
        IFACE_PORT,
        (PRESENT, PRESENT_PORT),
    );
    assert!(ns
        .listening(&[IFACE_PORT, PRESENT_PORT])
        .contains(&format!("{PRESENT}:{PRESENT_PORT}")));

    // DHCP renumbering: the old address goes, a new one comes.
    ns.ip(&["addr", "del", "10.77.0.1/24", "dev", "veth0"]);
    ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth0"]);
    ns.converges(&daemon, "renumbered", IFACE_PORT, (PRESENT, PRESENT_PORT));

    ns.ip(&["link", "set", "veth0", "down"]);
    ns.converges(&daemon, "veth0 down", IFACE_PORT, (PRESENT, PRESENT_PORT));
    assert!(
        !ns.listening(&[IFACE_PORT, PRESENT_PORT])
            .iter()
            .any(|a| a.ends_with(&IFACE_PORT.to_string())),
        "nothing of veth0 while it is down"
    );
    ns.ip(&["link", "set", "veth0", "up"]);
    ns.converges(
        &daemon,
        "veth0 up again",
        IFACE_PORT,
        (PRESENT, PRESENT_PORT),
    );

    ns.ip(&["addr", "del", &format!("{PRESENT}/32"), "dev", "veth1"]);
    ns.converges(
        &daemon,
        "the when-present address removed",
        IFACE_PORT,
        (PRESENT, PRESENT_PORT),
    );

    // A flood while the daemon reads nothing: thousands of notifications overflow its socket
    // (ENOBUFS); the end state differs from the start in what the binds resolve to.
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut flood = address_churn("10.78", 4000);
    flood.push_str("addr add 10.77.0.3/24 dev veth0\n");
    flood.push_str(&format!("addr add {PRESENT}/32 dev veth1\n"));
    ns.batch(&flood);
    daemon.signal(nix::sys::signal::Signal::SIGCONT);
    daemon.wait_for_log("network events lost");
    ns.converges(
        &daemon,
        "after the ENOBUFS resync",
        IFACE_PORT,
        (PRESENT, PRESENT_PORT),
    );
    assert!(ns
        .listening(&[IFACE_PORT, PRESENT_PORT])
        .contains(&format!("10.77.0.3:{IFACE_PORT}")));
    assert!(ns
        .listening(&[IFACE_PORT, PRESENT_PORT])
        .contains(&format!("{PRESENT}:{PRESENT_PORT}")));
}
