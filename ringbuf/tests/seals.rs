//! Fds handed to a peer are checked before anything is mapped: seals, sizes, magic, version and
//! fd kinds, each refusal naming its cause; and the seals really stop the read-only side from
//! writing, also through a reopened /proc path.

mod common;

use edgegw_ring::{Consumer, Producer, Protection, RingConfig, RingFds};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

fn memfd(len: usize) -> OwnedFd {
    let fd = memfd_create(c"test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, len as libc::off_t).unwrap();
    fd
}

fn eventfd() -> OwnedFd {
    nix::sys::eventfd::EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
        .unwrap()
        .into()
}

/// A valid ring's fds as its consumer gets them, for tampering (seal protection: the region is
/// sealed `F_SEAL_FUTURE_WRITE`, which the tests below take apart).
fn good() -> (Producer, RingFds) {
    let config = RingConfig::with_capacity(4096).protection(Protection::Seal);
    let p = Producer::create(config).unwrap();
    let fds = p.served_ring().unwrap().into_fds();
    (p, fds)
}

/// Copy a memfd's contents into a new memfd with other seals.
fn copy_with_seals(src: &OwnedFd, seals: SealFlag) -> OwnedFd {
    let len = nix::sys::stat::fstat(src.as_fd()).unwrap().st_size as usize;
    let mut bytes = vec![0u8; len];
    nix::sys::uio::pread(src.as_fd(), &mut bytes, 0).unwrap();
    let dst = memfd(len);
    nix::sys::uio::pwrite(dst.as_fd(), &bytes, 0).unwrap();
    if !seals.is_empty() {
        fcntl(dst.as_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
    }
    dst
}

fn expect_refusal(fds: RingFds, words: &[&str]) {
    let err = Consumer::from_fds(fds).unwrap_err().to_string();
    for w in words {
        assert!(err.contains(w), "error {err:?} should mention {w:?}");
    }
}

#[test]
fn a_region_without_the_size_seals_is_refused() {
    let (_p, mut fds) = good();
    fds.region = copy_with_seals(&fds.region, SealFlag::F_SEAL_FUTURE_WRITE);
    expect_refusal(fds, &["region", "F_SEAL_SHRINK|F_SEAL_GROW"]);
}

#[test]
fn a_region_the_consumer_could_write_is_refused() {
    let (_p, mut fds) = good();
    fds.region = copy_with_seals(&fds.region, SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW);
    expect_refusal(fds, &["region", "F_SEAL_FUTURE_WRITE"]);
}

#[test]
fn a_consumer_page_without_seals_is_refused() {
    let (_p, mut fds) = good();
    fds.consumer_page = copy_with_seals(&fds.consumer_page, SealFlag::empty());
    expect_refusal(fds, &["consumer page", "F_SEAL_SHRINK|F_SEAL_GROW"]);
}

#[test]
fn fds_meant_for_the_other_role_are_refused_with_a_hint() {
    let (_p, fds) = good();
    let err = Producer::from_fds(fds).unwrap_err().to_string();
    assert!(err.contains("meant for a consumer"), "{err}");
}

#[test]
fn a_plain_file_instead_of_a_memfd_is_refused() {
    let (_p, mut fds) = good();
    let file = std::fs::File::open("/proc/self/status").unwrap();
    fds.region = file.into();
    expect_refusal(fds, &["region", "not a memfd"]);
}

#[test]
fn a_region_of_the_wrong_size_is_refused() {
    let (_p, fds) = good();
    let len = nix::sys::stat::fstat(fds.region.as_fd()).unwrap().st_size as usize;
    let mut bytes = vec![0u8; len];
    nix::sys::uio::pread(fds.region.as_fd(), &mut bytes, 0).unwrap();
    let bigger = memfd(len + 4096);
    nix::sys::uio::pwrite(bigger.as_fd(), &bytes, 0).unwrap();
    fcntl(
        bigger.as_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_FUTURE_WRITE,
        ),
    )
    .unwrap();
    let fds = RingFds {
        region: bigger,
        ..fds
    };
    expect_refusal(fds, &["region memfd is", "the header says"]);
}

fn tampered_header(offset: usize, bytes: &[u8], words: &[&str]) {
    let (_p, fds) = good();
    let len = nix::sys::stat::fstat(fds.region.as_fd()).unwrap().st_size as usize;
    let mut content = vec![0u8; len];
    nix::sys::uio::pread(fds.region.as_fd(), &mut content, 0).unwrap();
    content[offset..offset + bytes.len()].copy_from_slice(bytes);
    let region = memfd(len);
    nix::sys::uio::pwrite(region.as_fd(), &content, 0).unwrap();
    fcntl(
        region.as_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_FUTURE_WRITE,
        ),
    )
    .unwrap();
    expect_refusal(RingFds { region, ..fds }, words);
}

#[test]
fn a_header_with_a_bad_magic_is_refused() {
    tampered_header(0, b"NOTARING", &["magic"]);
}

#[test]
fn a_header_of_another_format_version_is_refused_naming_both_versions() {
    tampered_header(8, &2u32.to_ne_bytes(), &["version 2", "version 1"]);
}

#[test]
fn a_header_for_another_page_size_is_refused() {
    tampered_header(12, &65536u32.to_ne_bytes(), &["page size 65536"]);
}

#[test]
fn an_fd_that_is_not_an_eventfd_is_refused() {
    let (_p, mut fds) = good();
    fds.data_event = memfd(8);
    expect_refusal(fds, &["data fd is not an eventfd"]);
    let (_p, mut fds) = good();
    fds.space_event = eventfd();
    Consumer::from_fds(fds).expect("a fresh eventfd is fine");
}

#[test]
fn the_consumer_cannot_write_the_region_even_through_a_reopened_proc_path() {
    let (_p, fds) = good();
    let consumer = Consumer::from_fds(fds.try_clone().unwrap()).unwrap();
    let path = format!("/proc/self/fd/{}", fds.region.as_raw_fd());
    // Opening for writing succeeds (an O_RDONLY fd alone would not protect anything)...
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("reopen");
    // ...but F_SEAL_FUTURE_WRITE refuses the write itself, and any resize.
    let err = f.write_all(b"scribble").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = f.set_len(1 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = nix::sys::uio::pwrite(fds.region.as_fd(), b"x", 4096).unwrap_err();
    assert_eq!(err, nix::Error::EPERM);
    drop(consumer);
}

#[test]
fn the_producer_cannot_write_the_consumer_page_of_a_reply_ring() {
    let config = RingConfig::with_capacity(4096).protection(Protection::Seal);
    let owner = Consumer::create(config).unwrap();
    let fds = owner.served_ring().unwrap().into_fds();
    let path = format!("/proc/self/fd/{}", fds.consumer_page.as_raw_fd());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("reopen");
    assert_eq!(
        f.write_all(b"scribble").unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
    // The region, which the producer does write, is not sealed against it.
    Producer::from_fds(fds).expect("producer maps the region writable");
}

#[test]
fn nobody_can_shrink_or_grow_either_memfd() {
    let (_p, fds) = good();
    for fd in [&fds.region, &fds.consumer_page] {
        assert_eq!(
            nix::unistd::ftruncate(fd, 0).unwrap_err(),
            nix::Error::EPERM
        );
        assert_eq!(
            nix::unistd::ftruncate(fd, 1 << 24).unwrap_err(),
            nix::Error::EPERM
        );
    }
}
