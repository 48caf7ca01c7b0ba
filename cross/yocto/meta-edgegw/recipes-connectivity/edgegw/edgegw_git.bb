SUMMARY = "Edge gateway daemon: TLS termination into shared-memory rings"
DESCRIPTION = "edgegw terminates TLS with rustls on one pinned thread, hands the decrypted \
bytes to local processes through shared-memory rings, and watches inotify, rtnetlink and \
cgroup v2."
HOMEPAGE = "https://example.invalid/edgegw"
SECTION = "net"
# PV, LICENSE and LIC_FILES_CHKSUM are kept in step with Cargo.toml by cross/update-recipes.
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=9;endline=9;md5=86b31c7756a1a7962f28b62856ed4f05"

inherit cargo cargo-update-recipe-crates

# Point EDGEGW_GIT_URI at your mirror and pin SRCREV (in a .bbappend) to the commit this recipe
# and edgegw-crates.inc come from: the crate list is the one of that commit's Cargo.lock.
EDGEGW_GIT_URI ??= "git://example.invalid/edgegw.git;protocol=https;branch=main"
SRC_URI = "${EDGEGW_GIT_URI}"
SRCREV ??= "${AUTOREV}"
PV = "0.1.0+git${SRCPV}"
S = "${WORKDIR}/git"

# Every crates.io crate of Cargo.lock, with its sha256 (generated: cross/update-recipes).
require ${BPN}-crates.inc

# The workspace root: its default member is the daemon, so the build makes the edgegw binary only.
CARGO_SRC_DIR = ""

# The TLS crypto provider: ring (default: the smaller binary) or aws-lc-rs (1.2 MB larger:
# cross/README.md). aws-lc-sys compiles its C with the target's compiler through cc-rs for the
# common targets; cmake is its fallback for the others.
PACKAGECONFIG ??= "ring"
PACKAGECONFIG[ring] = ""
PACKAGECONFIG[aws-lc-rs] = ",,cmake-native"
EDGEGW_CARGO_FEATURES = "${@bb.utils.contains('PACKAGECONFIG', 'aws-lc-rs', '--no-default-features --features aws-lc-rs', '', d)}"

do_compile() {
    oe_cargo_build -p edgegw ${EDGEGW_CARGO_FEATURES}
}

# Runtime: the kernel features it watches (inotify, rtnetlink, cgroup v2, memfd) are in every
# kernel this targets; the tests' tools (openssl, iproute2) are not needed on the device.
