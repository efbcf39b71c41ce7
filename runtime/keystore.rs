//! The keystore: our key pairs and our partners' certificates, as PEM files
//! in `<data dir>/keys/`. Key files are written owner-only (0600), atomically
//! (temporary file, fsync, rename), so a crash never leaves half a key.
//!
//! ```text
//! keys/<name>.key.pem    private key (PKCS#8) followed by its certificate
//! keys/<name>.cert.pem   certificate only (a partner's, or ours to publish)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use atom_connectors::as2::cms::{self, KeyPair};
use atom_connectors::keys;
use openssl::x509::X509;

/// Keystore errors: what failed and on which file.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(#[from] atom_connectors::As2Error),
    #[error("invalid key name {0:?}: use letters, digits, '-', '_' and '.' (not leading)")]
    BadName(String),
    #[error("no key or certificate named {0:?} in the keystore")]
    NotFound(String),
    #[error("{0:?} already exists in the keystore; choose another name or remove it first")]
    Exists(String),
}

type Result<T> = std::result::Result<T, KeystoreError>;

/// One keystore entry as `atom certs list` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub has_private_key: bool,
    pub subject: String,
    pub not_after: String,
    pub expired: bool,
    pub fingerprint: String,
}

/// A keystore rooted at a directory.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names become file names: no separators, no leading dot, nothing exotic.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::BadName(name.to_string()))
    }
}

impl Keystore {
    /// The keystore of a data directory.
    pub fn open(data_dir: &Path) -> Keystore {
        Keystore {
            dir: data_dir.join("keys"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key.pem"))
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cert.pem"))
    }

    fn exists(&self, name: &str) -> bool {
        self.key_path(name).exists() || self.cert_path(name).exists()
    }

    /// Stores a key pair (and its certificate alone, for publishing).
    pub fn put_key_pair(&self, name: &str, pair: &KeyPair) -> Result<()> {
        check_name(name)?;
        if self.exists(name) {
            return Err(KeystoreError::Exists(name.to_string()));
        }
        self.write_atomic(&self.key_path(name), &keys::to_pem(pair)?, true)?;
        let cert_pem = pair.cert.to_pem().map_err(|e| {
            atom_connectors::As2Error::openssl(
                atom_connectors::ErrorKind::Internal,
                "writing certificate PEM",
                e,
            )
        })?;
        self.write_atomic(&self.cert_path(name), &cert_pem, false)
    }

    /// Stores a certificate without a key (a partner's).
    pub fn put_certificate(&self, name: &str, cert: &X509) -> Result<()> {
        check_name(name)?;
        if self.exists(name) {
            return Err(KeystoreError::Exists(name.to_string()));
        }
        let pem = cert.to_pem().map_err(|e| {
            atom_connectors::As2Error::openssl(
                atom_connectors::ErrorKind::Internal,
                "writing certificate PEM",
                e,
            )
        })?;
        self.write_atomic(&self.cert_path(name), &pem, false)
    }

    /// Loads a key pair by name.
    pub fn key_pair(&self, name: &str) -> Result<KeyPair> {
        check_name(name)?;
        let path = self.key_path(name);
        if !path.exists() {
            return Err(KeystoreError::NotFound(name.to_string()));
        }
        Ok(keys::load_key_pair(&path, None, None)?)
    }

    /// Loads a certificate by name (from the certificate file, or the key file).
    pub fn certificate(&self, name: &str) -> Result<X509> {
        check_name(name)?;
        let cert_path = self.cert_path(name);
        if cert_path.exists() {
            return Ok(keys::load_certificates(&cert_path)?.remove(0));
        }
        Ok(self.key_pair(name)?.cert)
    }

    /// Every entry, sorted by name.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut names: Vec<String> = Vec::new();
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        for item in read {
            let item = item.map_err(io_err(&self.dir))?;
            let file = item.file_name().to_string_lossy().to_string();
            if let Some(name) = file
                .strip_suffix(".key.pem")
                .or_else(|| file.strip_suffix(".cert.pem"))
            {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let cert = self.certificate(&name)?;
                Ok(Entry {
                    has_private_key: self.key_path(&name).exists(),
                    subject: cms::subject_of(&cert),
                    not_after: cert.not_after().to_string(),
                    expired: cms::is_expired(&cert),
                    fingerprint: keys::fingerprint(&cert),
                    name,
                })
            })
            .collect()
    }

    fn write_atomic(&self, path: &Path, data: &[u8], secret: bool) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(data)
            .and_then(|_| file.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_keystore() {
        for bad in ["../x", "a/b", ".hidden", "", "a b", "..", "x\\y"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["partner-1", "our_key.2026", "A"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
