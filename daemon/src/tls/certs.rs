//! Reading certificates, keys, CA bundles and CRLs from PEM files, with errors that say which
//! file and what is wrong with it.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Reads a certificate chain (leaf first). At least one certificate is required.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(chain)
}

/// Reads one private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA), unencrypted.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let hint = if contains(&bytes, b"ENCRYPTED PRIVATE KEY") {
                " (the key is encrypted: store it unencrypted, protected by file permissions)"
            } else if contains(&bytes, b"BEGIN CERTIFICATE") {
                " (this is a certificate, not a key)"
            } else {
                ""
            };
            Err(format!("{}: no private key in it{hint}", path.display()))
        }
        Err(e) => Err(format!("{}: bad PEM: {}", path.display(), pem_error(e))),
    }
}

/// Reads a CA bundle: one or more PEM certificates.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Reads certificate revocation lists, PEM ("BEGIN X509 CRL") or a single DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = read(path)?;
    if !contains(&bytes, b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_error(e)))?;
    if crls.is_empty() {
        return Err(format!(
            "{}: no CRL in it (expected \"BEGIN X509 CRL\")",
            path.display()
        ));
    }
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing \"{}\"", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line \"{}\"", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(msg) => format!("bad base64: {msg}"),
        other => other.to_string(),
    }
}
