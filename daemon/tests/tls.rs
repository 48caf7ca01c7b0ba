//! TLS settings as clients see them: SNI, client certificates and CRLs, ALPN, versions,
//! resumption.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two certificates by SNI from one CA, written to `dir`.
fn sni_config(pki: &Pki, dir: &std::path::Path, unknown_sni: &str) -> String {
    let (a_cert, a_key, _) = pki.issue(&["a.example"], false, 1);
    let (b_cert, b_key, _) = pki.issue(&["b.example", "*.b.example"], false, 2);
    write(dir, "a.pem", &a_cert);
    write(dir, "a.key", &a_key);
    write(dir, "b.pem", &b_cert);
    write(dir, "b.key", &b_key);
    format!(
        r#"
[[listener]]
name = "tls"
bind = ["127.0.0.1:0"]
route = "app"
unknown_sni = "{unknown_sni}"
  [[listener.certificate]]
  cert = "{{dir}}/a.pem"
  key = "{{dir}}/a.key"
  [[listener.certificate]]
  cert = "{{dir}}/b.pem"
  key = "{{dir}}/b.key"
[[route]]
name = "app"
ring = "app"
[[ring]]
name = "app"
"#
    )
}

fn start_with_files(config: impl FnOnce(&std::path::Path) -> String) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    TestDaemon::start_in(dir, &text).unwrap()
}

#[test]
fn sni_selects_the_certificate_and_names_come_from_the_certificates() {
    let pki = Pki::new("test CA");
    let daemon = start_with_files(|dir| sni_config(&pki, dir, "reject"));
    let config = client_config(std::slice::from_ref(&pki.ca_der), &[]);
    block_on(async {
        for name in ["a.example", "b.example", "x.b.example"] {
            let tls = connect(daemon.addr("tls"), config.clone(), name).await;
            assert!(tls.is_ok(), "{name}: {tls:?}");
        }
    });
    daemon.wait_for("three handshakes", |s| s.handshakes == 3);
}

#[test]
fn an_unknown_server_name_gets_unrecognized_name() {
    let pki = Pki::new("test CA");
    let daemon = start_with_files(|dir| sni_config(&pki, dir, "reject"));
    let config = client_config(std::slice::from_ref(&pki.ca_der), &[]);
    block_on(async {
        let err = connect(daemon.addr("tls"), config.clone(), "c.example")
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("UnrecognisedName"), "{text}");
        // A good client right after is served.
        connect(daemon.addr("tls"), config, "a.example")
            .await
            .unwrap();
    });
    daemon.wait_for("one refusal, one handshake", |s| {
        (s.unknown_sni, s.handshakes) == (1, 1)
    });
}

#[test]
fn unknown_sni_default_serves_the_first_certificate() {
    let pki = Pki::new("test CA");
    let daemon = start_with_files(|dir| sni_config(&pki, dir, "default"));
    // The client asks for c.example and gets a.example's certificate: name verification fails on
    // the client side, which proves which certificate came.
    block_on(async {
        let err = connect(
            daemon.addr("tls"),
            client_config(std::slice::from_ref(&pki.ca_der), &[]),
            "c.example",
        )
        .await
        .unwrap_err();
        assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    });
    assert_eq!(daemon.stats().unknown_sni, 0);
}

fn mtls_config(
    pki: &Pki,
    client_ca: &Pki,
    dir: &std::path::Path,
    revoked: &[u64],
    optional: bool,
) -> String {
    let (cert, key, _) = pki.issue(&["gw.example"], false, 1);
    write(dir, "server.pem", &cert);
    write(dir, "server.key", &key);
    write(dir, "clients.pem", &client_ca.ca_pem());
    write(dir, "clients.crl", &client_ca.crl_pem(revoked));
    format!(
        r#"
[[listener]]
name = "tls"
bind = ["127.0.0.1:0"]
route = "app"
  [[listener.certificate]]
  cert = "{{dir}}/server.pem"
  key = "{{dir}}/server.key"
  [listener.client_auth]
  ca = "{{dir}}/clients.pem"
  crls = ["{{dir}}/clients.crl"]
  optional = {optional}
[[route]]
name = "app"
ring = "app"
[[ring]]
name = "app"
"#
    )
}

#[test]
fn client_certificates_are_verified_against_the_ca_and_crl_and_reported() {
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let (good_cert, good_key, _) = clients.issue(&["device-7"], true, 70);
    let (revoked_cert, revoked_key, _) = clients.issue(&["device-8"], true, 80);
    let stranger_ca = Pki::new("someone else");
    let (stranger_cert, stranger_key, _) = stranger_ca.issue(&["device-9"], true, 90);
    let daemon = start_with_files(|dir| mtls_config(&pki, &clients, dir, &[80], false));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [pki.ca_der.clone()];
    block_on(async {
        let addr = daemon.addr("tls");
        let mut tls = connect(
            addr,
            client_config_with_cert(&roots, &good_cert, &good_key),
            "gw.example",
        )
        .await
        .unwrap();
        tls.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.unwrap();

        // TLS 1.3 clients learn of a refused certificate on their first read.
        for (cert, key) in [
            (&revoked_cert, &revoked_key),
            (&stranger_cert, &stranger_key),
        ] {
            let refused = async {
                let mut tls = connect(
                    addr,
                    client_config_with_cert(&roots, cert, key),
                    "gw.example",
                )
                .await?;
                tls.write_all(b"x").await?;
                let mut buf = [0u8; 1];
                tls.read_exact(&mut buf).await
            };
            assert!(refused.await.is_err());
        }
        let no_cert = async {
            let mut tls = connect(addr, client_config(&roots, &[]), "gw.example").await?;
            let mut buf = [0u8; 1];
            tls.read_exact(&mut buf).await
        };
        assert!(no_cert.await.is_err());
    });
    let seen = consumer.wait_for("the open record", |s| !s.opens.is_empty());
    assert_eq!(seen.opens.len(), 1, "only the good client got through");
    let subject = &seen.opens[0].1.client_subject;
    assert!(
        subject.contains("CN=device-7") && subject.contains("O=Edge Test"),
        "{subject}"
    );
    let stats = daemon.wait_for("bad client certificates counted", |s| {
        s.bad_client_certificates == 3
    });
    assert_eq!(stats.handshakes, 1);
}

#[test]
fn optional_client_auth_accepts_clients_without_certificates() {
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let daemon = start_with_files(|dir| mtls_config(&pki, &clients, dir, &[], true));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    block_on(async {
        let mut tls = connect(
            daemon.addr("tls"),
            client_config(std::slice::from_ref(&pki.ca_der), &[]),
            "gw.example",
        )
        .await
        .unwrap();
        tls.write_all(b"ok").await.unwrap();
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.unwrap();
    });
    let seen = consumer.wait_for("the open record", |s| !s.opens.is_empty());
    assert_eq!(seen.opens[0].1.client_subject, "");
}

fn alpn_and_both_versions() -> String {
    ring_config(
        "alpn = [\"h2\", \"http/1.1\"]\ntls_versions = [\"1.3\", \"1.2\"]",
        SELF_SIGNED,
        "",
        "",
    )
}

#[test]
fn alpn_is_negotiated_in_server_preference_and_a_mismatch_is_refused() {
    let daemon = TestDaemon::start(&alpn_and_both_versions());
    let roots = [self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let tls = connect(
            daemon.addr("tls"),
            client_config(&roots, &["http/1.1", "h2"]),
            "localhost",
        )
        .await
        .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let err = connect(
            daemon.addr("tls"),
            client_config(&roots, &["spdy/3"]),
            "localhost",
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:?}").contains("NoApplicationProtocol"),
            "{err:?}"
        );
    });
}

#[test]
fn tls12_and_tls13_are_both_served_and_tls12_can_be_turned_off() {
    let daemon = TestDaemon::start(&alpn_and_both_versions());
    let roots = [self_signed_cert(&daemon, "localhost")];
    let tls12_only = |roots: &[rustls::pki_types::CertificateDer<'static>]| {
        let mut store = rustls::RootCertStore::empty();
        store.add(roots[0].clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(edgegw::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(store)
                .with_no_client_auth(),
        )
    };
    block_on(async {
        let tls = connect(daemon.addr("tls"), tls12_only(&roots), "localhost")
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    });
    let daemon13 = TestDaemon::start(&alpn_and_both_versions().replace(
        "tls_versions = [\"1.3\", \"1.2\"]",
        "tls_versions = [\"1.3\"]",
    ));
    let roots = [self_signed_cert(&daemon13, "localhost")];
    block_on(async {
        let err = connect(daemon13.addr("tls"), tls12_only(&roots), "localhost")
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("ProtocolVersion"), "{err:?}");
    });
}

#[test]
fn sessions_resume_with_tickets() {
    let daemon = TestDaemon::start(&alpn_and_both_versions());
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let config = client_config(&roots, &[]);
    block_on(async {
        for round in 0..2 {
            let tcp = tokio::net::TcpStream::connect(daemon.addr("tls"))
                .await
                .unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            // Reading the echo also reads the ticket the server sent after the handshake.
            tls.write_all(b"t").await.unwrap();
            let mut buf = [0u8; 1];
            tls.read_exact(&mut buf).await.unwrap();
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            assert_eq!(resumed, round == 1, "round {round}");
        }
    });
}

#[test]
fn the_server_picks_the_cipher_suite_for_its_cpu_and_follows_chacha_clients() {
    use rustls::CipherSuite as S;
    let daemon = TestDaemon::start(&alpn_and_both_versions());
    let roots = [self_signed_cert(&daemon, "localhost")];
    // A client offering exactly these suites, in this order.
    let offering = |version: &'static rustls::SupportedProtocolVersion, suites: &[S]| {
        let mut provider = (*edgegw::tls::provider()).clone();
        provider.cipher_suites = suites
            .iter()
            .map(|want| {
                *provider
                    .cipher_suites
                    .iter()
                    .find(|s| s.suite() == *want)
                    .unwrap()
            })
            .collect();
        let mut store = rustls::RootCertStore::empty();
        store.add(roots[0].clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(store)
                .with_no_client_auth(),
        )
    };
    let fast = if edgegw::tls::aes_in_hardware() {
        eprintln!("this CPU has AES hardware: AES-128-GCM is the server's first choice");
        [
            S::TLS13_AES_128_GCM_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ]
    } else {
        eprintln!("this CPU has no AES hardware: ChaCha20-Poly1305 is the server's first choice");
        [
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    };
    let v13 = &rustls::version::TLS13;
    let v12 = &rustls::version::TLS12;
    let cases = [
        // OpenSSL's, curl's and rustls's order: AES-256 first. The server decides.
        (
            v13,
            vec![
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_128_GCM_SHA256,
            ],
            fast[0],
        ),
        (
            v12,
            vec![
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
            fast[1],
        ),
        // A client without AES hardware lists ChaCha20 first: it gets ChaCha20.
        (
            v13,
            vec![
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
            ],
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            v12,
            vec![
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        // What the client offers alone is still served.
        (
            v13,
            vec![S::TLS13_AES_256_GCM_SHA384],
            S::TLS13_AES_256_GCM_SHA384,
        ),
    ];
    block_on(async {
        for (version, suites, want) in cases {
            let tls = connect(daemon.addr("tls"), offering(version, &suites), "localhost")
                .await
                .unwrap_or_else(|e| panic!("{suites:?}: {e}"));
            let got = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
            assert_eq!(got, want, "client offering {suites:?}");
        }
    });
}
