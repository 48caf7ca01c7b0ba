//! `include/edgegw_ring.h` is what cbindgen makes of this crate's sources: a header that
//! drifted from the library would let C call functions with the wrong signature.
//!
//! When this test fails, regenerate the header and review the difference:
//! `EDGEGW_BLESS=1 cargo test -p edgegw-ring-ffi --test header`.

use std::path::Path;

#[test]
fn the_checked_in_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        // The sources alone (mod declarations are followed): no `cargo metadata`, no network.
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let header = crate_dir.join("../include/edgegw_ring.h");
    if std::env::var_os("EDGEGW_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&header, &generated).expect("write the header");
        eprintln!("EDGEGW_BLESS=1: wrote {}", header.display());
        return;
    }
    let checked_in = std::fs::read(&header).expect("read the header");
    assert!(
        checked_in == generated,
        "ringbuf/include/edgegw_ring.h is stale: it is not what cbindgen makes of \
         ringbuf/ffi/src. Regenerate it with\n    \
         EDGEGW_BLESS=1 cargo test -p edgegw-ring-ffi --test header\nand review the difference \
         (git diff)."
    );
}
