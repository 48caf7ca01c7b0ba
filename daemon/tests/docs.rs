//! What the documents promise about defaults is what the code does.

use std::path::Path;

use edgegw::config::Config;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `256KiB` as the documents write sizes (`256KiB`, `256 KiB`, `1 MiB`) into bytes.
fn size(text: &str) -> usize {
    let text = text.replace(' ', "");
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
    let unit = match unit {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        other => panic!("unit {other}"),
    };
    number.parse::<usize>().unwrap() * unit
}

/// The text between `before` and `after` in `doc`, which must hold it.
fn between<'a>(doc: &'a str, before: &str, after: &str) -> &'a str {
    let at = doc
        .find(before)
        .unwrap_or_else(|| panic!("`{before}` is not in the document"))
        + before.len();
    let end = doc[at..].find(after).unwrap() + at;
    &doc[at..end]
}

#[test]
fn the_readmes_give_the_default_ring_capacity_the_daemon_makes() {
    let config = Config::from_toml(
        Path::new("test.toml"),
        "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  \
         [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \
         \"app\"\n[[ring]]\nname = \"app\"\n",
    )
    .unwrap();
    let made = config.rings[0].capacity;
    let readme = read("README.md");
    assert_eq!(
        size(between(&readme, "a power of two (default ", ")")),
        made,
        "README.md"
    );
    let ring_readme = read("ringbuf/README.md");
    assert_eq!(
        size(between(&ring_readme, "the edgegw daemon makes ", " rings")),
        made,
        "ringbuf/README.md"
    );
    assert_eq!(
        size(between(&ring_readme, "`RingConfig::default()` is ", ";")),
        edgegw_ring::RingConfig::DEFAULT_CAPACITY,
        "ringbuf/README.md, the crate's own default"
    );
}
