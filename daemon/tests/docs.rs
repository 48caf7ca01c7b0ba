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

/// `doc` with its lines joined, for sentences that a line break may cut anywhere.
fn prose(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A duration as the documents write it: `500ms`, `10s`, `5m`.
fn written_duration(d: std::time::Duration) -> String {
    match (d.as_millis(), d.as_secs()) {
        (ms, _) if ms % 1000 != 0 => format!("{ms}ms"),
        (_, s) if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        (_, s) => format!("{s}s"),
    }
}

/// The comment of the line `key = ...` of the README's configuration reference.
fn reference_comment<'a>(readme: &'a str, key: &str) -> &'a str {
    let block = between(readme, "## Configuration", "\n## ");
    let block = between(block, "```toml\n", "```");
    let mut lines = block
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{key} =")));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key} =` in the README's configuration reference"));
    assert!(lines.next().is_none(), "`{key} =` twice in the reference");
    line.split_once('#')
        .unwrap_or_else(|| panic!("`{key} =` has no comment"))
        .1
}

/// The configuration every default below is read from: the least a config must say.
fn minimal_config() -> Config {
    Config::from_toml(
        Path::new("test.toml"),
        "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  \
         [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \
         \"app\"\n[[ring]]\nname = \"app\"\n[events]\nring = \"kernel\"\n",
    )
    .unwrap()
}

#[test]
fn the_readmes_configuration_reference_gives_the_defaults_the_daemon_uses() {
    let config = minimal_config();
    let listener = &config.listeners[0];
    let readme = read("README.md");
    let says = |key: &str, default: String| {
        let comment = reference_comment(&readme, key);
        assert!(
            comment.contains(&format!("default {default}")),
            "README.md, `{key}`: the daemon's default is {default}, the comment says:{comment}"
        );
    };
    says(
        "stack_size",
        format!("{}KiB", config.daemon.tls_stack_size >> 10),
    );
    says(
        "handshake_timeout",
        written_duration(listener.handshake_timeout),
    );
    says("idle_timeout", written_duration(listener.idle_timeout));
    says("max_connections", listener.max_connections.to_string());
    says("max_handshakes", listener.max_handshakes.to_string());
    says("max_handshakes_per_source", "max_handshakes / 8".into());
    assert_eq!(
        listener.max_handshakes_per_source,
        listener.max_handshakes / 8
    );
    says("files", config.watch.files.to_string());
    says("debounce", written_duration(config.watch.debounce));
    says("shed", config.pressure.shed.to_string());
    says("window", written_duration(config.pressure.window));
    assert!(config.pressure.full, "stall_kind's default is \"full\"");
    assert!(reference_comment(&readme, "stall_kind").contains("\"full\" (default"));
    assert!(config.daemon.tls_cpu.is_none());
    assert!(reference_comment(&readme, "cpu").contains("default: not pinned"));
    assert!(listener.alpn.is_empty());
    assert!(reference_comment(&readme, "alpn").contains("default none"));
    assert_eq!(listener.versions.len(), 2);
    assert!(reference_comment(&readme, "tls_versions").contains("default both"));
    // The values the reference shows without the word "default" are the defaults too, so a
    // config copied from it behaves as one that leaves them out.
    for (key, value) in [
        (
            "reload_timeout",
            written_duration(config.daemon.reload_timeout),
        ),
        ("drain_time", written_duration(config.daemon.drain_time)),
        ("stall", written_duration(config.pressure.stall)),
        (
            "poll_interval",
            written_duration(config.pressure.poll_interval),
        ),
        (
            "resume_after",
            written_duration(config.pressure.resume_after),
        ),
        (
            "netlink_buffer",
            format!("{}MiB", config.watch.netlink_buffer >> 20),
        ),
    ] {
        let block = between(&readme, "## Configuration", "\n## ");
        assert!(
            block.contains(&format!("\n{key} = \"{value}\"")),
            "README.md's reference shows `{key}` other than its default {value}"
        );
    }
    assert_eq!(
        size(between(&readme, "and `capacity`, default ", ")")),
        config.events.capacity,
        "README.md, the events ring's capacity"
    );
    assert_eq!(
        size(between(
            &prose(&readme),
            "2 netlink sockets, ",
            " receive buffer"
        )),
        config.watch.netlink_buffer,
        "README.md, the netlink receive buffer"
    );
}

#[test]
fn the_systemd_readme_gives_the_reload_budget_and_drain_time_the_daemon_uses() {
    let config = minimal_config();
    let readme = prose(&read("systemd/README.md"));
    let seconds = |text: &str| -> std::time::Duration {
        let (number, unit) = text.split_once(' ').unwrap();
        let number: u64 = number.parse().unwrap();
        match unit {
            "ms" => std::time::Duration::from_millis(number),
            "s" => std::time::Duration::from_secs(number),
            other => panic!("unit {other}"),
        }
    };
    assert_eq!(
        seconds(between(&readme, "`daemon.reload_timeout` (default ", ")")),
        config.daemon.reload_timeout
    );
    assert_eq!(
        seconds(between(&readme, "`daemon.drain_time` (default ", ",")),
        config.daemon.drain_time
    );
}

#[test]
fn the_readmes_give_the_log_rate_limit_the_logger_applies() {
    let burst = edgegw::log::BURST.to_string();
    let window = edgegw::log::WINDOW.as_secs().to_string();
    let readme = prose(&read("README.md"));
    assert_eq!(
        between(&readme, "Each kind of message prints at most ", " seconds"),
        format!("{burst} lines per {window}")
    );
    assert_eq!(
        between(
            &prose(&read("systemd/README.md")),
            "of one kind are limited to ",
            " s,"
        ),
        format!("{burst} per {window}")
    );
    assert_eq!(
        between(&prose(&read("daemon/README.md")), "prints at most ", " s;"),
        format!("{burst} lines per {window}")
    );
}

#[test]
fn the_daemon_readme_lists_the_ring_counters_in_the_order_of_the_stat_answer() {
    let readme = prose(&read("daemon/README.md"));
    let list = between(&readme, "in this order: ", ". Malformed replies");
    let (answer, more) = list
        .split_once("then, in the message after the answer:")
        .expect("the list says which counters follow the answer");
    // The counters' names: the code spans that are a bare name (not a metric, a path or a
    // suffix the sentence mentions).
    let names = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| {
                name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && !name.starts_with("edgegw_")
            })
            .map(str::to_string)
            .collect()
    };
    let code: Vec<String> = edgegw::gateway::RingCounter::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let (answer, more) = (names(answer), names(more));
    // FORMAT.md section 6: eight in the answer, the rest in the message after it.
    assert_eq!(answer.len(), 8, "{answer:?}");
    assert_eq!(
        [answer, more].concat(),
        code,
        "daemon/README.md's ring counters"
    );
}

#[test]
fn the_ring_documents_give_the_limits_the_ring_applies() {
    let format = prose(&read("ringbuf/FORMAT.md"));
    let sizes = between(&format, "bytes (", ").");
    assert_eq!(
        sizes,
        format!(
            "{} bytes for a 64 KiB ring, {} for 1 MiB",
            edgegw_ring::max_payload(64 << 10),
            edgegw_ring::max_payload(1 << 20)
        )
    );
    assert_eq!(
        between(&format, "The reference owner sends ", ".")
            .parse::<usize>()
            .unwrap(),
        edgegw_ring::OwnerCounters::LEN - 8,
        "FORMAT.md, the counters after the stat answer"
    );
    let readme = prose(&read("ringbuf/README.md"));
    assert_eq!(
        between(&readme, "`wait` spins for `DEFAULT_SPIN` (", " µs;"),
        edgegw_ring::DEFAULT_SPIN.as_micros().to_string()
    );
}
