use super::*;
use std::time::Duration;

const GOOD: &str = r#"
[daemon]
runtime_dir = "/run/edgegw-test"
  [daemon.tls_thread]
  stack_size = "256KiB"
  cpu = 1

[[listener]]
name = "public"
bind = ["0.0.0.0:8443", "[::]:8443"]
route = "app"
tls_versions = ["1.3"]
alpn = ["h2", "http/1.1"]
handshake_timeout = "5s"
idle_timeout = "2m"
max_connections = 500
max_handshakes = 50
unknown_sni = "default"

  [[listener.certificate]]
  cert = "certs/a.pem"
  key = "certs/a.key"
  server_names = ["a.example", "*.a.example"]

  [[listener.certificate]]
  self_signed = true

  [listener.client_auth]
  ca = "ca.pem"
  crls = ["revoked.crl"]
  optional = true

[[listener]]
name = "internal"
systemd_socket = "edgegw-internal"
route = "backend"
  [[listener.certificate]]
  self_signed = true

[[route]]
name = "app"
ring = "app"
framing = "length-prefixed"
max_frame = "16KiB"

[[route]]
name = "backend"
tcp = "127.0.0.1:9000"

[[ring]]
name = "app"
capacity = "1MiB"
when_full = "drop"
allow_uids = [1000]
allow_gids = [100]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/edgegw/gw.toml"), text)
}

/// The 1-based line of the first occurrence of `snippet` in `text`.
fn line_of(text: &str, snippet: &str) -> usize {
    let at = text
        .find(snippet)
        .unwrap_or_else(|| panic!("`{snippet}` not in the config"));
    text[..at].matches('\n').count() + 1
}

/// Asserts that `text` fails on the line holding `at` with a message containing `needle`, and
/// that the location names `key`.
fn fails(text: &str, at: &str, key: &str, needle: &str) {
    let line = line_of(text, at);
    let err = parse(text).expect_err("config should be refused");
    let location = err.location.as_ref().expect("error has a location");
    assert_eq!(location.file, Path::new("/etc/edgegw/gw.toml"), "{err}");
    assert_eq!(location.line, line, "wrong line in: {err}");
    assert_eq!(location.key.as_deref(), Some(key), "wrong key in: {err}");
    assert!(err.message.contains(needle), "`{needle}` not in: {err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("/etc/edgegw/gw.toml:{line}:")),
        "{shown}"
    );
}

#[test]
fn a_full_config_parses_with_every_key() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.daemon.tls_stack_size, 256 * 1024);
    assert_eq!(config.daemon.tls_cpu, Some(1));
    assert_eq!(config.listeners.len(), 2);
    let public = &config.listeners[0];
    assert_eq!(
        public.bind,
        Bind::Addresses(vec![
            "0.0.0.0:8443".parse().unwrap(),
            "[::]:8443".parse().unwrap()
        ])
    );
    assert_eq!(public.versions, vec![TlsVersion::Tls13]);
    assert_eq!(public.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(public.handshake_timeout, Duration::from_secs(5));
    assert_eq!(public.idle_timeout, Duration::from_secs(120));
    assert_eq!((public.max_connections, public.max_handshakes), (500, 50));
    assert_eq!(
        public.max_handshakes_per_source, 6,
        "an eighth of max_handshakes"
    );
    assert_eq!(config.listeners[1].max_handshakes_per_source, 16, "128 / 8");
    assert_eq!(public.unknown_sni, UnknownSni::UseDefault);
    assert_eq!(
        public.certificates[0].source,
        CertificateSource::Files {
            cert: "/etc/edgegw/certs/a.pem".into(),
            key: "/etc/edgegw/certs/a.key".into()
        }
    );
    assert_eq!(
        public.certificates[0].server_names,
        ["a.example", "*.a.example"]
    );
    assert_eq!(public.certificates[1].source, CertificateSource::SelfSigned);
    let auth = public.client_auth.as_ref().unwrap();
    assert_eq!(auth.ca, Path::new("/etc/edgegw/ca.pem"));
    assert_eq!(auth.crls, vec![PathBuf::from("/etc/edgegw/revoked.crl")]);
    assert!(auth.optional);
    assert_eq!(
        config.listeners[1].bind,
        Bind::Systemd("edgegw-internal".into())
    );
    assert_eq!(
        config.route("app").framing,
        Framing::LengthPrefixed { max_frame: 16384 }
    );
    assert_eq!(
        config.route("backend").target,
        RouteTarget::Tcp("127.0.0.1:9000".parse().unwrap())
    );
    let ring = config.ring("app").unwrap();
    assert_eq!((ring.capacity, ring.when_full), (1 << 20, WhenFull::Drop));
    assert_eq!(
        (ring.allow_uids.as_slice(), ring.allow_gids.as_slice()),
        (&[1000][..], &[100][..])
    );
}

#[test]
fn the_builtin_default_is_valid() {
    let config = Config::builtin();
    assert_eq!(
        config.listeners[0].bind,
        Bind::Addresses(vec!["127.0.0.1:8443".parse().unwrap()])
    );
    assert_eq!(
        config.listeners[0].certificates[0].source,
        CertificateSource::SelfSigned
    );
    assert_eq!(
        config.route("default").target,
        RouteTarget::Ring("default".into())
    );
}

#[test]
fn unknown_keys_name_their_line_and_table() {
    fails(
        "[[listener]]\nname = \"a\"\nroute = \"r\"\nbind = [\"127.0.0.1:1\"]\nhandshake_timeot = \"1s\"\n",
        "handshake_timeot",
        "listener.handshake_timeot",
        "unknown field `handshake_timeot`",
    );
    fails(
        "[daemon]\nstate_dri = \"/x\"\n",
        "state_dri",
        "daemon.state_dri",
        "unknown field",
    );
}

#[test]
fn wrong_types_name_their_line() {
    fails(
        "[[listener]]\nname = \"a\"\nroute = \"r\"\nmax_connections = \"many\"\n",
        "max_connections",
        "listener.max_connections",
        "invalid type",
    );
}

#[test]
fn bad_addresses_are_refused() {
    let text = GOOD.replace("\"0.0.0.0:8443\"", "\"0.0.0.0:84433\"");
    fails(
        &text,
        "84433",
        "listener.bind",
        "bad address `0.0.0.0:84433`",
    );
    let text = GOOD.replace("\"[::]:8443\"", "\"0.0.0.0:8443\"");
    fails(&text, "bind = ", "listener.bind", "bound twice");
    let text = GOOD.replace("tcp = \"127.0.0.1:9000\"", "tcp = \"localhost\"");
    fails(&text, "tcp = ", "route.tcp", "bad address");
}

#[test]
fn duplicate_names_are_refused() {
    let text = GOOD.replace("name = \"internal\"", "name = \"public\"");
    fails(
        &text,
        "name = \"public\"\nsystemd",
        "listener.name",
        "duplicate name `public`",
    );
    let text = GOOD.replace("name = \"backend\"", "name = \"app\"");
    fails(
        &text,
        "name = \"app\"\ntcp",
        "route.name",
        "duplicate name `app`",
    );
    let text = GOOD.replace(
        "server_names = [\"a.example\", \"*.a.example\"]",
        "server_names = [\"a.example\", \"A.example\"]",
    );
    fails(
        &text,
        "server_names = [\"a.example\", \"A",
        "listener.certificate.server_names",
        "served by two certificates",
    );
}

#[test]
fn routes_to_missing_rings_and_listeners_to_missing_routes_are_refused() {
    let text = GOOD.replace("ring = \"app\"", "ring = \"nope\"");
    fails(
        &text,
        "ring = \"nope\"",
        "route.ring",
        "ring `nope`, which is not defined",
    );
    let text = GOOD.replace("route = \"backend\"", "route = \"gone\"");
    fails(
        &text,
        "route = \"gone\"",
        "listener.route",
        "route `gone` is not defined",
    );
}

#[test]
fn values_out_of_range_are_refused() {
    // (replace, with, on the line of, key, message)
    let cases = [
        (
            "capacity = \"1MiB\"",
            "capacity = 5000",
            "capacity = 5000",
            "ring.capacity",
            "power of two",
        ),
        (
            "handshake_timeout = \"5s\"",
            "handshake_timeout = \"5\"",
            "handshake_timeout",
            "listener.handshake_timeout",
            "no unit",
        ),
        (
            "max_handshakes = 50",
            "max_handshakes = 5000",
            "max_handshakes",
            "listener.max_handshakes",
            "exceeds max_connections",
        ),
        (
            "max_handshakes = 50",
            "max_handshakes = 50\nmax_handshakes_per_source = 51",
            "max_handshakes_per_source",
            "listener.max_handshakes_per_source",
            "max_handshakes_per_source (51) exceeds max_handshakes (50)",
        ),
        (
            "max_handshakes = 50",
            "max_handshakes = 50\nmax_handshakes_per_source = 0",
            "max_handshakes_per_source",
            "listener.max_handshakes_per_source",
            "between 1 and 1000000",
        ),
        (
            "max_frame = \"16KiB\"",
            "max_frame = \"1MiB\"",
            "max_frame",
            "route.max_frame",
            "does not fit in ring `app`",
        ),
        (
            "tls_versions = [\"1.3\"]",
            "tls_versions = [\"1.1\"]",
            "tls_versions",
            "listener.tls_versions",
            "unknown variant `1.1`, expected `1.2` or `1.3`",
        ),
        (
            "when_full = \"drop\"",
            "when_full = \"block\"",
            "when_full",
            "ring.when_full",
            "unknown variant `block`, expected `backpressure` or `drop`",
        ),
        (
            "unknown_sni = \"default\"",
            "unknown_sni = \"ignore\"",
            "unknown_sni",
            "listener.unknown_sni",
            "unknown variant `ignore`, expected `reject` or `default`",
        ),
        (
            "framing = \"length-prefixed\"",
            "framing = \"lines\"",
            "framing",
            "route.framing",
            "unknown variant `lines`, expected `stream` or `length-prefixed`",
        ),
        (
            "tls_versions = [\"1.3\"]",
            "tls_versions = [\"1.3\", \"1.3\"]",
            "tls_versions",
            "listener.tls_versions",
            "TLS version `1.3` listed twice",
        ),
    ];
    for (from, to, at, key, needle) in cases {
        fails(&GOOD.replace(from, to), at, key, needle);
    }
}

#[test]
fn certificate_entries_need_exactly_one_source() {
    let text = GOOD.replace("  key = \"certs/a.key\"\n", "");
    fails(
        &text,
        "cert = \"certs",
        "listener.certificate.cert",
        "`cert` without `key`",
    );
    let text = GOOD.replace(
        "  cert = \"certs/a.pem\"\n",
        "  cert = \"certs/a.pem\"\n  self_signed = true\n",
    );
    fails(
        &text,
        "cert = \"certs",
        "listener.certificate.cert",
        "not both",
    );
}

#[test]
fn a_route_needs_exactly_one_target() {
    let text = GOOD.replace(
        "tcp = \"127.0.0.1:9000\"",
        "tcp = \"127.0.0.1:9000\"\nunix = \"/run/app.sock\"",
    );
    fails(&text, "unix = ", "route.unix", "more than one");
}

#[test]
fn an_empty_file_says_a_listener_is_needed() {
    let err = parse("").unwrap_err();
    assert!(err.to_string().contains("no [[listener]]"), "{err}");
}

#[test]
fn allow_lists_take_names_and_look_them_up_at_load() {
    // root (uid 0, gid 0) is in every user and group database, also a static musl build's.
    let text = GOOD
        .replace("allow_uids = [1000]", "allow_uids = [\"root\", 1000]")
        .replace("allow_gids = [100]", "allow_gids = [100, \"root\"]");
    let config = parse(&text).unwrap();
    let ring = config.ring("app").unwrap();
    assert_eq!(
        (ring.allow_uids.as_slice(), ring.allow_gids.as_slice()),
        (&[0, 1000][..], &[100, 0][..])
    );
}

#[test]
fn allow_lists_refuse_unknown_names_and_impossible_numbers_with_the_place() {
    let unknown = "edgegw-no-such-group-4f1c";
    fails(
        &GOOD.replace(
            "allow_gids = [100]",
            &format!("allow_gids = [\"{unknown}\"]"),
        ),
        "allow_gids",
        "ring.allow_gids",
        &format!("no group named \"{unknown}\" on this system"),
    );
    fails(
        &GOOD.replace(
            "allow_uids = [1000]",
            &format!("allow_uids = [\"{unknown}\"]"),
        ),
        "allow_uids",
        "ring.allow_uids",
        &format!("no user named \"{unknown}\" on this system"),
    );
    fails(
        &GOOD.replace("allow_uids = [1000]", "allow_uids = [-1]"),
        "allow_uids",
        "ring.allow_uids",
        "-1 is not a uid or gid",
    );
    fails(
        &GOOD.replace("allow_gids = [100]", "allow_gids = [4294967296]"),
        "allow_gids",
        "ring.allow_gids",
        "4294967296 is not a uid or gid",
    );
}

#[test]
fn every_size_is_written_as_bytes_or_with_a_unit() {
    // A size is "a size in bytes (65536) or with a unit (\"64KiB\")" wherever the config takes
    // one: the events ring's capacity and the netlink buffer took only strings.
    let text = format!(
        "{GOOD}\n[events]\nring = \"kernel\"\ncapacity = 65536\n[watch]\nnetlink_buffer = \
         2097152\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.events.capacity, 65536);
    assert_eq!(config.watch.netlink_buffer, 2 << 20);
    let text = format!("{GOOD}\n[events]\nring = \"kernel\"\ncapacity = \"128KiB\"\n");
    assert_eq!(parse(&text).unwrap().events.capacity, 128 << 10);
    let text = format!("{GOOD}\n[events]\nring = \"kernel\"\ncapacity = 5000\n");
    fails(&text, "capacity = 5000", "events.capacity", "power of two");
}
