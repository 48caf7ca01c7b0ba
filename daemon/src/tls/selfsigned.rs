//! The self-signed certificate of the default config: ECDSA P-256, generated on first start and
//! kept in the state directory, renewed when it nears expiry or its names change.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Validity of a generated certificate.
const VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Renew when less than this is left.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// Paths of a self-signed certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key (mode 0600).
    pub key: PathBuf,
}

impl SelfSigned {
    /// Where the certificate for `names` lives under `state_dir`.
    pub fn paths(state_dir: &Path, names: &[String]) -> SelfSigned {
        let stem = names
            .first()
            .map_or("localhost".to_string(), |n| n.replace('*', "_wildcard"));
        let dir = state_dir.join("self-signed");
        SelfSigned {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    fn meta(&self) -> PathBuf {
        self.cert.with_extension("meta")
    }

    /// Whether the files exist, are for `names` and are not near expiry.
    pub fn is_current(&self, names: &[String]) -> bool {
        let Ok(meta) = std::fs::read_to_string(self.meta()) else {
            return false;
        };
        let mut lines = meta.lines();
        let not_after: Option<u64> = lines.next().and_then(|l| l.parse().ok());
        let stored_names: Vec<&str> = lines.collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        not_after.is_some_and(|t| Duration::from_secs(t) > now + RENEW_BEFORE)
            && stored_names == names.iter().map(String::as_str).collect::<Vec<_>>()
            && self.cert.is_file()
            && self.key.is_file()
    }

    /// Generates the certificate and key if they are missing, stale or for other names.
    /// Returns whether it generated new ones.
    pub fn ensure(&self, names: &[String]) -> Result<bool, SelfSignedError> {
        if self.is_current(names) {
            return Ok(false);
        }
        self.generate(names)?;
        Ok(true)
    }

    fn generate(&self, names: &[String]) -> Result<(), SelfSignedError> {
        let generated = Generated::new(names)?;
        let dir = self
            .cert
            .parent()
            .expect("paths() puts files in a directory");
        std::fs::create_dir_all(dir).map_err(|cause| SelfSignedError::CreateDir {
            dir: dir.to_path_buf(),
            cause,
        })?;
        write_atomically(&self.key, generated.key.serialize_pem().as_bytes(), 0o600)?;
        write_atomically(&self.cert, generated.cert.pem().as_bytes(), 0o644)?;
        let meta = std::iter::once(generated.not_after.to_string())
            .chain(names.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        write_atomically(&self.meta(), meta.as_bytes(), 0o644)
    }
}

/// Why a self-signed certificate could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// The names cannot go into a certificate.
    #[error("cannot make a certificate for {names:?}: {cause}")]
    Names {
        /// The names.
        names: Vec<String>,
        /// Why.
        cause: rcgen::Error,
    },
    /// Key generation failed.
    #[error("cannot generate a P-256 key: {0}")]
    Key(rcgen::Error),
    /// Signing failed.
    #[error("cannot self-sign: {0}")]
    Sign(rcgen::Error),
    /// The state directory cannot be made.
    #[error("cannot create {}: {cause}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// A freshly generated certificate and key.
struct Generated {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    /// Expiry, seconds since the epoch.
    not_after: i64,
}

impl Generated {
    fn new(names: &[String]) -> Result<Generated, SelfSignedError> {
        let mut sans: Vec<String> = names.to_vec();
        if names.iter().any(|n| n == "localhost") {
            // Clients that connect to the loopback address by number check these.
            sans.extend(["127.0.0.1".to_string(), "::1".to_string()]);
        }
        let mut params =
            rcgen::CertificateParams::new(sans).map_err(|cause| SelfSignedError::Names {
                names: names.to_vec(),
                cause,
            })?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::seconds(VALIDITY.as_secs() as i64);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!(
                "edgegw self-signed {}",
                names.first().map_or("", String::as_str)
            ),
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(SelfSignedError::Key)?;
        let cert = params.self_signed(&key).map_err(SelfSignedError::Sign)?;
        Ok(Generated {
            cert,
            key,
            not_after: params.not_after.unix_timestamp().max(0),
        })
    }
}

/// A throwaway certificate and key for `names`, in memory (used by `check-config`).
pub fn generate_in_memory(
    names: &[String],
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    SelfSignedError,
> {
    let generated = Generated::new(names)?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(generated.key.serialize_der());
    Ok((vec![generated.cert.der().clone()], key.into()))
}

/// Writes `path` through a temporary file and a rename, so a crash never leaves half a key.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SelfSignedError> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|cause| {
        let _ = std::fs::remove_file(&tmp);
        SelfSignedError::Write {
            path: path.to_path_buf(),
            cause,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses_and_regenerates_for_new_names() {
        let dir = tempdir();
        let names = vec!["localhost".to_string()];
        let paths = SelfSigned::paths(&dir, &names);
        assert!(paths.ensure(&names).unwrap(), "first start generates");
        let first = std::fs::read(&paths.cert).unwrap();
        assert!(!paths.ensure(&names).unwrap(), "second start reuses");
        assert_eq!(std::fs::read(&paths.cert).unwrap(), first);
        let mode = std::fs::metadata(&paths.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let other = vec!["localhost".to_string(), "gw.local".to_string()];
        assert!(paths.ensure(&other).unwrap(), "new names regenerate");
        assert_ne!(std::fs::read(&paths.cert).unwrap(), first);

        let chain = super::super::certs::load_chain(&paths.cert).unwrap();
        let key = super::super::certs::load_key(&paths.key).unwrap();
        let provider = super::super::provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider).expect("key matches cert");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edgegw-selfsigned-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
