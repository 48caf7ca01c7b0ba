//! Reading certificates, keys, CA bundles and CRLs from PEM files, with errors that say which
//! file and what is wrong with it.

use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Why a PEM file could not be used. Its message names the file (the config error that
/// carries it names the key that named the file).
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    /// It cannot be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// It is not well-formed PEM.
    #[error("{}: bad PEM: {}", path.display(), describe(cause))]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        cause: pem::Error,
    },
    /// It holds none of what it should.
    #[error("{}: no {what} in it{hint}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What it holds instead, or what it should look like.
        hint: &'static str,
    },
    /// A CA certificate rustls cannot use.
    #[error("{}: unusable CA certificate: {cause}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: rustls::Error,
    },
}

/// Reads a certificate chain (leaf first). At least one certificate is required.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| bad_pem(path, cause))?;
    if chain.is_empty() {
        return Err(PemFileError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
            hint: " (expected a PEM \"BEGIN CERTIFICATE\" block)",
        });
    }
    Ok(chain)
}

/// Reads one private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA), unencrypted.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemFileError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(PemFileError::Missing {
            path: path.to_path_buf(),
            what: "private key",
            hint: if contains(&bytes, b"ENCRYPTED PRIVATE KEY") {
                " (the key is encrypted: store it unencrypted, protected by file permissions)"
            } else if contains(&bytes, b"BEGIN CERTIFICATE") {
                " (this is a certificate, not a key)"
            } else {
                ""
            },
        }),
        Err(cause) => Err(bad_pem(path, cause)),
    }
}

/// Reads a CA bundle: one or more PEM certificates.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PemFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_chain(path)? {
        roots.add(cert).map_err(|cause| PemFileError::Ca {
            path: path.to_path_buf(),
            cause,
        })?;
    }
    Ok(roots)
}

/// Reads certificate revocation lists, PEM ("BEGIN X509 CRL") or a single DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PemFileError> {
    let bytes = read(path)?;
    if !contains(&bytes, b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| bad_pem(path, cause))?;
    if crls.is_empty() {
        return Err(PemFileError::Missing {
            path: path.to_path_buf(),
            what: "CRL",
            hint: " (expected \"BEGIN X509 CRL\")",
        });
    }
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|cause| PemFileError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn bad_pem(path: &Path, cause: pem::Error) -> PemFileError {
    PemFileError::Pem {
        path: path.to_path_buf(),
        cause,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing \"{}\"", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line \"{}\"", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(msg) => format!("bad base64: {msg}"),
        other => other.to_string(),
    }
}
