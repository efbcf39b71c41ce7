//! Every certificate this Atom holds or trusts, with where it is used and
//! when it expires: the keystore, and each listener's pinned and own
//! certificates. The console's Certificates page, the expiry gauge and
//! the expiry alerts all read this one list.

use openssl::x509::X509;

use crate::keystore::Keystore;
use crate::listeners::Registry;

/// One certificate in one use.
#[derive(Debug, Clone)]
pub struct InUse {
    /// A keystore name, or the listener that uses it.
    pub owner: String,
    /// What it is used for, in words.
    pub role: &'static str,
    pub subject: String,
    /// SHA-256, colon-separated hex.
    pub fingerprint: String,
    /// As OpenSSL prints it (`Nov 20 21:10:17 2036 GMT`).
    pub not_after: String,
    /// Seconds until it expires; negative once expired.
    pub seconds_left: Option<i64>,
}

impl InUse {
    pub fn days_left(&self) -> Option<i64> {
        self.seconds_left.map(|s| s.div_euclid(86_400))
    }
}

/// Seconds from now until the certificate's notAfter.
fn seconds_left(cert: &X509) -> Option<i64> {
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let diff = now.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

fn in_use(owner: &str, role: &'static str, cert: &X509) -> InUse {
    InUse {
        owner: owner.into(),
        role,
        subject: atom_connectors::as2::cms::subject_of(cert),
        fingerprint: atom_connectors::keys::fingerprint(cert),
        not_after: cert.not_after().to_string(),
        seconds_left: seconds_left(cert),
    }
}

/// The keystore's certificates, then each listener's, by name.
pub fn inventory(keystore: &Keystore, registry: &Registry) -> Result<Vec<InUse>, String> {
    let mut all = Vec::new();
    for entry in keystore.list().map_err(|e| e.to_string())? {
        let cert = keystore
            .certificate(&entry.name)
            .map_err(|e| e.to_string())?;
        let role = if entry.has_private_key {
            "keystore: our key pair"
        } else {
            "keystore: certificate"
        };
        all.push(in_use(&entry.name, role, &cert));
    }
    let mut listeners = registry.list();
    listeners.sort_by(|a, b| a.id.cmp(&b.id));
    for listener in listeners {
        let Some(spec) = registry.spec(&listener.id) else {
            continue;
        };
        for cert in &spec.receive.partner_certs {
            all.push(in_use(&listener.id, "partner signing (pinned)", cert));
        }
        if let Some(cert) = &spec.client_certificate {
            all.push(in_use(&listener.id, "partner TLS client (pinned)", cert));
        }
        for pair in &spec.receive.decryption_keys {
            all.push(in_use(&listener.id, "our decryption", &pair.cert));
        }
        if let Some(pair) = &spec.mdn_signing_key {
            all.push(in_use(&listener.id, "our MDN signing", &pair.cert));
        }
    }
    Ok(all)
}

/// Seconds until `cert` expires (negative once expired), for callers that
/// hold one certificate.
pub fn expires_in(cert: &X509) -> Option<i64> {
    seconds_left(cert)
}
