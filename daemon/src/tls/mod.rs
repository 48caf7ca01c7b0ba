//! TLS settings: from a listener's config to a rustls `ServerConfig`.
//!
//! Everything a handshake needs is built here on the control plane, ahead of use, so that a bad
//! certificate is an error in `check-config` or a failed reload, never a failed handshake. The
//! [`TlsBuilder`] lives as long as the daemon: its ticket keys and session cache carry over
//! reloads, so clients resume across a certificate change.

mod certs;
pub mod clienthello;
mod resolver;
pub mod selfsigned;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use resolver::SniResolver;

use crate::config::{
    CertificateConfig, CertificateSource, ConfigError, ListenerConfig, TlsVersion,
};

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!(
    "edgegw needs a crypto provider: enable the `ring` (default) or `aws-lc-rs` feature"
);

/// The crypto provider, chosen at build time: `ring` (the default), or `aws-lc-rs` when that
/// feature is enabled.
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    return Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return Arc::new(rustls::crypto::ring::default_provider());
}

/// Whether this CPU does AES-GCM in hardware (AES and carry-less multiply instructions: x86
/// AES-NI with PCLMULQDQ, the ARMv8 crypto extension's AES with PMULL). Many small ARM boards
/// lack them (Cortex-A53 or A72 parts without the crypto extension), and there ChaCha20-Poly1305
/// is several times faster than AES-GCM in software.
pub fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[allow(unreachable_code)]
    false
}

/// The server's cipher suite preference (it decides, not the client).
///
/// Every suite it offers is sound; the order is about cost on this CPU. First the AEAD this CPU
/// runs fastest: AES-128-GCM with AES hardware, else ChaCha20-Poly1305; then the other; and
/// AES-256-GCM last. The two first ones hash with SHA-256, which CPUs accelerate (x86 SHA-NI,
/// the ARMv8 crypto extension) where SHA-512 (AES-256-GCM's SHA-384) mostly runs in software:
/// measured on the development machine, a full handshake cost 99 µs of server CPU with
/// AES-256-GCM-SHA384, which most clients (OpenSSL, curl, rustls) list first, and 89 µs with
/// AES-128-GCM-SHA256. `chacha_first` is also used for a client that lists ChaCha20 first,
/// the sign of a client without AES hardware (as BoringSSL and Go servers do).
fn ordered_suites(provider: &CryptoProvider, chacha_first: bool) -> CryptoProvider {
    use rustls::CipherSuite as S;
    let rank = |suite: S| {
        let aes128 = matches!(
            suite,
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        let chacha = matches!(
            suite,
            S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        );
        match (aes128, chacha) {
            (true, _) => u8::from(chacha_first),
            (_, true) => u8::from(!chacha_first),
            _ => 2,
        }
    };
    let mut ordered = provider.clone();
    ordered.cipher_suites.sort_by_key(|s| rank(s.suite()));
    ordered
}

/// Name of the crypto provider in use, for logs and benchmarks.
pub const PROVIDER_NAME: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "ring"
};

fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return rustls::crypto::ring::Ticketer::new();
}

/// What to do with `self_signed = true` certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfSignedMode {
    /// Generate them in the state directory if needed, and use them (the daemon).
    Persist,
    /// Generate throwaway ones in memory (check-config: validates without writing anything).
    InMemory,
}

/// A listener's TLS, ready for handshakes.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The rustls configuration, with the suite order for this CPU (see `ordered_suites`).
    pub config: Arc<ServerConfig>,
    /// The same with ChaCha20-Poly1305 first, for clients that prefer it; the same `Arc` as
    /// `config` where ChaCha20 comes first anyway.
    pub chacha_config: Arc<ServerConfig>,
    /// Its certificate resolver, also consulted before the handshake to refuse unknown names.
    pub resolver: Arc<SniResolver>,
}

impl ListenerTls {
    /// The configuration for a client whose ClientHello says this.
    pub fn config_for(&self, hello: &clienthello::Hello) -> &Arc<ServerConfig> {
        if hello.prefers_chacha {
            &self.chacha_config
        } else {
            &self.config
        }
    }
}

/// Builds listener TLS configs; one per daemon, kept across reloads.
#[derive(Debug)]
pub struct TlsBuilder {
    /// Suites in this CPU's order.
    provider: Arc<CryptoProvider>,
    /// Suites with ChaCha20 first; `None` where that is `provider`'s order already.
    chacha_provider: Option<Arc<CryptoProvider>>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<ServerSessionMemoryCache>,
}

impl TlsBuilder {
    /// A builder with fresh ticket keys.
    pub fn new() -> anyhow::Result<Self> {
        let base = provider();
        let aes = aes_in_hardware();
        Ok(TlsBuilder {
            provider: Arc::new(ordered_suites(&base, !aes)),
            chacha_provider: aes.then(|| Arc::new(ordered_suites(&base, true))),
            ticketer: new_ticketer()?,
            // TLS 1.2 session-ID resumption; TLS 1.3 uses tickets and stores nothing here.
            sessions: ServerSessionMemoryCache::new(256),
        })
    }

    /// Loads and checks a listener's certificates, keys and client-auth files, and builds its
    /// rustls config.
    pub fn listener(
        &self,
        listener: &ListenerConfig,
        state_dir: &Path,
        mode: SelfSignedMode,
    ) -> Result<ListenerTls, ConfigError> {
        let mut keys = Vec::new();
        for cert in &listener.certificates {
            keys.push((cert, self.certified_key(cert, state_dir, mode)?));
        }
        let mut resolver = SniResolver::new(keys[0].1.clone(), listener.unknown_sni);
        for (cert, key) in &keys {
            let names = if cert.server_names.is_empty() {
                names_in_certificate(key, cert)?
            } else {
                cert.server_names.clone()
            };
            for name in names {
                resolver.add(&name, key);
            }
        }
        let resolver = Arc::new(resolver);

        let verifier = self.client_verifier(listener)?;
        let config = self.server_config(&self.provider, listener, &resolver, &verifier)?;
        let chacha_config = match &self.chacha_provider {
            Some(chacha) => self.server_config(chacha, listener, &resolver, &verifier)?,
            None => config.clone(),
        };
        Ok(ListenerTls {
            config,
            chacha_config,
            resolver,
        })
    }

    /// The client-certificate verifier of a listener with `client_auth` (mTLS).
    fn client_verifier(
        &self,
        listener: &ListenerConfig,
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
        let Some(auth) = &listener.client_auth else {
            return Ok(None);
        };
        let fail = |message: String| ConfigError::at(auth.location.clone(), message);
        let roots = certs::load_roots(&auth.ca).map_err(|e| fail(e.to_string()))?;
        let mut crls = Vec::new();
        for path in &auth.crls {
            crls.extend(certs::load_crls(path).map_err(|e| fail(e.to_string()))?);
        }
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .with_crls(crls);
        if auth.optional {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| fail(format!("client_auth: {e}")))?;
        Ok(Some(verifier))
    }

    /// A listener's rustls config with `provider`'s suite order.
    fn server_config(
        &self,
        provider: &Arc<CryptoProvider>,
        listener: &ListenerConfig,
        resolver: &Arc<SniResolver>,
        verifier: &Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>, ConfigError> {
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = listener
            .versions
            .iter()
            .map(|v| match v {
                TlsVersion::Tls13 => &rustls::version::TLS13,
                TlsVersion::Tls12 => &rustls::version::TLS12,
            })
            .collect();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| ConfigError {
                location: None,
                message: format!("listener `{}`: {e}", listener.name),
            })?;
        let builder = match verifier {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = listener.alpn.clone();
        config.max_early_data_size = 0;
        config.ignore_client_order = true;
        // An oversized record gets a record_overflow alert sealed with the connection's own
        // keys (`gateway::session`); they never leave the TLS thread.
        config.enable_secret_extraction = true;
        if listener.client_auth.is_none() {
            config.ticketer = self.ticketer.clone();
            config.session_storage = self.sessions.clone();
            // One ticket per connection is what clients use; each costs a seal and a record.
            config.send_tls13_tickets = 1;
        } else {
            // A resumed session skips client-certificate verification, so a revoked client
            // (a CRL reloaded since) could resume. No resumption with client certificates.
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }

    fn certified_key(
        &self,
        cert: &CertificateConfig,
        state_dir: &Path,
        mode: SelfSignedMode,
    ) -> Result<Arc<CertifiedKey>, ConfigError> {
        let fail = |location: &crate::config::Location, message: &dyn std::fmt::Display| {
            ConfigError::at(location.clone(), message.to_string())
        };
        let (chain, key) = match (&cert.source, mode) {
            (CertificateSource::Files { cert: c, key: k }, _) => (
                certs::load_chain(c).map_err(|e| fail(&cert.cert_location, &e))?,
                certs::load_key(k).map_err(|e| fail(&cert.key_location, &e))?,
            ),
            (CertificateSource::SelfSigned, SelfSignedMode::Persist) => {
                let files = selfsigned::SelfSigned::paths(state_dir, &cert.server_names);
                if files
                    .ensure(&cert.server_names)
                    .map_err(|e| fail(&cert.location, &e))?
                {
                    log::info!(
                        "generated a self-signed ECDSA P-256 certificate for {:?}: {}",
                        cert.server_names,
                        files.cert.display()
                    );
                }
                (
                    certs::load_chain(&files.cert).map_err(|e| fail(&cert.location, &e))?,
                    certs::load_key(&files.key).map_err(|e| fail(&cert.location, &e))?,
                )
            }
            (CertificateSource::SelfSigned, SelfSignedMode::InMemory) => {
                selfsigned::generate_in_memory(&cert.server_names)
                    .map_err(|e| fail(&cert.location, &e))?
            }
        };
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| fail(&cert.key_location, &format!("unusable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(fail(
                    &cert.key_location,
                    &"the private key does not match the certificate",
                ))
            }
            Err(e) => {
                return Err(fail(
                    &cert.cert_location,
                    &format!("unusable certificate: {e}"),
                ))
            }
        }
        Ok(Arc::new(certified))
    }
}

/// The DNS names (and wildcards) a certificate is valid for, for SNI selection when the config
/// lists none.
fn names_in_certificate(
    key: &CertifiedKey,
    cert: &CertificateConfig,
) -> Result<Vec<String>, ConfigError> {
    let leaf = key.end_entity_cert().map_err(|e| ConfigError {
        location: Some(cert.cert_location.clone()),
        message: e.to_string(),
    })?;
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| ConfigError {
        location: Some(cert.cert_location.clone()),
        message: format!("cannot parse the certificate: {e}"),
    })?;
    Ok(parsed
        .valid_dns_names()
        .map(|n| n.to_ascii_lowercase())
        .collect())
}
