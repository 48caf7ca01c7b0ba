//! Choosing a listener's certificate by the client's server name (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::UnknownSni;

/// A listener's certificates by server name: exact names, then `*.` wildcards (one label, as
/// RFC 6125 says), then the default (the first certificate) for clients that send no name.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    unknown: UnknownSni,
}

impl SniResolver {
    /// Starts with the default certificate.
    pub fn new(default: Arc<CertifiedKey>, unknown: UnknownSni) -> Self {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
            unknown,
        }
    }

    /// Serves `key` for `name` (lowercase; `*.example.com` for a wildcard). The first
    /// certificate to claim a name keeps it.
    pub fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.entry(parent.to_string()),
            None => self.exact.entry(name),
        }
        .or_insert_with(|| key.clone());
    }

    /// The certificate for a ClientHello's server name; `None` means: refuse with
    /// `unrecognized_name`.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return Some(&self.default);
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.exact
            .get(name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .or(match self.unknown {
                UnknownSni::UseDefault => Some(&self.default),
                UnknownSni::Reject => None,
            })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(client_hello.server_name()).cloned()
    }
}
