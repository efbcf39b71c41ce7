//! `atom certs`: manage the keystore (see [`crate::keystore`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use atom_connectors::keys::{self, KeyKind};
use clap::{Subcommand, ValueEnum};

use super::CliError;
use crate::keystore::Keystore;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a key pair and a self-signed certificate for AS2 signing and encryption.
    Generate {
        /// Keystore name of the new key.
        name: String,
        /// Certificate common name (defaults to the name).
        #[arg(long)]
        cn: Option<String>,
        /// Key algorithm.
        #[arg(long, value_enum, default_value_t = KeyAlg::Rsa2048)]
        key: KeyAlg,
        /// Validity in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
    },
    /// Import a key pair (PKCS#12, or PEM with key and certificate) or a partner's certificate.
    Import {
        /// Keystore name to import under.
        name: String,
        /// A .p12/.pfx, a PEM/DER private key (with --cert or certificate inside), or a certificate.
        file: PathBuf,
        /// Certificate file for a separate private key file.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Password of the PKCS#12 file or encrypted key.
        #[arg(long, env = "ATOM_KEY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Export a certificate (to give to a partner), or a key pair as PEM or PKCS#12.
    Export {
        /// Keystore name.
        name: String,
        /// What to write.
        #[arg(long, value_enum, default_value_t = ExportFormat::Cert)]
        format: ExportFormat,
        /// Password for --format p12.
        #[arg(long, env = "ATOM_KEY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Output file (standard output when absent; refused for key material).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// List keys and certificates with subject, expiry and fingerprint.
    List {
        /// Only those expired or expiring within this many days (`30d` or `30`).
        #[arg(long, value_name = "DAYS")]
        expiring: Option<String>,
    },
}

/// `30d` or `30` as days.
fn parse_days(text: &str) -> Result<i64, CliError> {
    text.trim()
        .trim_end_matches('d')
        .parse::<u32>()
        .map(i64::from)
        .map_err(|_| CliError::Usage(format!("--expiring {text:?}: give days, as 30d or 30")))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyAlg {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The certificate alone, PEM.
    Cert,
    /// Private key and certificate, PEM (unencrypted).
    Pem,
    /// Private key and certificate, PKCS#12 protected by --password.
    P12,
}

pub fn run(data_dir: &Path, command: CertsCommand) -> Result<(), CliError> {
    let store = Keystore::open(data_dir);
    match command {
        CertsCommand::Generate {
            name,
            cn,
            key,
            days,
        } => {
            let kind = match key {
                KeyAlg::Rsa2048 => KeyKind::Rsa(2048),
                KeyAlg::Rsa3072 => KeyKind::Rsa(3072),
                KeyAlg::Rsa4096 => KeyKind::Rsa(4096),
                KeyAlg::EcP256 => KeyKind::EcP256,
                KeyAlg::EcP384 => KeyKind::EcP384,
            };
            let pair = keys::generate(cn.as_deref().unwrap_or(&name), kind, days)?;
            store.put_key_pair(&name, &pair)?;
            println!(
                "generated {name}: {} (fingerprint {})",
                atom_connectors::as2::cms::subject_of(&pair.cert),
                keys::fingerprint(&pair.cert)
            );
            Ok(())
        }
        CertsCommand::Import {
            name,
            file,
            cert,
            password,
        } => {
            let data = std::fs::read(&file).map_err(|source| CliError::Io {
                path: file.clone(),
                source,
            })?;
            let origin = file.display().to_string();
            let is_p12 = file
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"));
            let has_key = is_p12 || String::from_utf8_lossy(&data).contains("PRIVATE KEY-----");
            if has_key || cert.is_some() {
                let pair = keys::load_key_pair(&file, cert.as_deref(), password.as_deref())?;
                store.put_key_pair(&name, &pair)?;
                println!(
                    "imported key pair {name}: {}",
                    atom_connectors::as2::cms::subject_of(&pair.cert)
                );
            } else {
                let certificate = keys::certificates_from_bytes(&data, &origin)?.remove(0);
                store.put_certificate(&name, &certificate)?;
                println!(
                    "imported certificate {name}: {}",
                    atom_connectors::as2::cms::subject_of(&certificate)
                );
            }
            Ok(())
        }
        CertsCommand::Export {
            name,
            format,
            password,
            out,
        } => {
            let bytes = match format {
                ExportFormat::Cert => store.certificate(&name)?.to_pem().map_err(|e| {
                    atom_connectors::As2Error::openssl(
                        atom_connectors::ErrorKind::Internal,
                        "writing certificate PEM",
                        e,
                    )
                })?,
                ExportFormat::Pem => keys::to_pem(&store.key_pair(&name)?)?,
                ExportFormat::P12 => {
                    let password = password.ok_or_else(|| {
                        CliError::Usage(
                            "--format p12 needs --password (or ATOM_KEY_PASSWORD)".into(),
                        )
                    })?;
                    keys::to_pkcs12(&store.key_pair(&name)?, &name, &password)?
                }
            };
            match out {
                Some(path) => write_file(&path, &bytes, format != ExportFormat::Cert),
                None if format == ExportFormat::Cert => std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|source| CliError::Io {
                        path: "<stdout>".into(),
                        source,
                    }),
                None => Err(CliError::Usage(
                    "refusing to print key material to the terminal: give --out FILE".into(),
                )),
            }
        }
        CertsCommand::List { expiring } => {
            let mut entries = store.list()?;
            if entries.is_empty() {
                println!("keystore {} is empty", store.dir().display());
                return Ok(());
            }
            if let Some(text) = expiring {
                let days = parse_days(&text)?;
                let mut kept = Vec::new();
                for entry in entries {
                    let left = crate::certificates::expires_in(&store.certificate(&entry.name)?);
                    if left.is_some_and(|s| s <= days * 86_400) {
                        kept.push(entry);
                    }
                }
                if kept.is_empty() {
                    println!("no certificate expires within {days} days");
                    return Ok(());
                }
                entries = kept;
            }
            println!(
                "{:<20} {:<5} {:<26} SUBJECT / SHA-256 FINGERPRINT",
                "NAME", "KEY", "EXPIRES"
            );
            for e in entries {
                let expires = if e.expired {
                    format!("{} (EXPIRED)", e.not_after)
                } else {
                    e.not_after
                };
                println!(
                    "{:<20} {:<5} {:<26} {}",
                    e.name,
                    if e.has_private_key { "yes" } else { "no" },
                    expires,
                    e.subject
                );
                println!("{:<20} {:<5} {:<26} {}", "", "", "", e.fingerprint);
            }
            Ok(())
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| CliError::Io {
            path: path.to_path_buf(),
            source,
        })
}
