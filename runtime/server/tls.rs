//! HTTPS for the shared web server: TLS 1.2 minimum (1.0 and 1.1 refused),
//! the server key pair from the keystore, optional or required client
//! certificates checked against `client_ca`.

use actix_web::dev::Extensions;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;

use crate::config::{ClientAuth, HttpsConfig};
use crate::keystore::Keystore;

/// The client certificate a TLS connection presented, for per-listener pinning.
#[derive(Clone)]
pub struct PeerCertificate(pub X509);

/// Builds the TLS acceptor; creates a self-signed server key when allowed and missing.
pub fn acceptor(
    https: &HttpsConfig,
    keystore: &Keystore,
    atom_name: &str,
) -> Result<SslAcceptorBuilder, String> {
    let pair = match keystore.key_pair(&https.keystore_name) {
        Ok(pair) => pair,
        Err(crate::keystore::KeystoreError::NotFound(_)) if https.self_signed_if_missing => {
            let pair = atom_connectors::keys::generate(
                atom_name,
                atom_connectors::keys::KeyKind::Rsa(2048),
                730,
            )
            .map_err(|e| format!("generating the self-signed HTTPS key: {e}"))?;
            keystore
                .put_key_pair(&https.keystore_name, &pair)
                .map_err(|e| e.to_string())?;
            tracing::warn!(
                keystore_name = %https.keystore_name,
                fingerprint = %atom_connectors::keys::fingerprint(&pair.cert),
                "generated a self-signed HTTPS certificate; import a real one for production"
            );
            pair
        }
        Err(e) => return Err(format!("HTTPS key pair {:?}: {e}", https.keystore_name)),
    };
    let tls_error = |what: &str, e: openssl::error::ErrorStack| format!("TLS set-up: {what}: {e}");
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| tls_error("creating acceptor", e))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| tls_error("minimum version", e))?;
    builder
        .set_private_key(&pair.key)
        .map_err(|e| tls_error("private key", e))?;
    builder
        .set_certificate(&pair.cert)
        .map_err(|e| tls_error("certificate", e))?;
    for extra in &pair.chain {
        builder
            .add_extra_chain_cert(extra.clone())
            .map_err(|e| tls_error("chain certificate", e))?;
    }
    builder
        .check_private_key()
        .map_err(|e| tls_error("key does not match certificate", e))?;
    if let Some(ca) = &https.client_ca {
        builder
            .set_ca_file(ca)
            .map_err(|e| tls_error(&format!("client_ca {}", ca.display()), e))?;
        // Name the acceptable CAs in the CertificateRequest, so that a
        // client holding several certificates picks the right one.
        let names = openssl::x509::X509Name::load_client_ca_file(ca)
            .map_err(|e| tls_error(&format!("client_ca names {}", ca.display()), e))?;
        builder.set_client_ca_list(names);
    }
    match https.client_auth {
        ClientAuth::None => builder.set_verify(SslVerifyMode::NONE),
        ClientAuth::Optional => builder.set_verify(SslVerifyMode::PEER),
        ClientAuth::Required => {
            builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT)
        }
    }
    Ok(builder)
}

/// Records the client certificate of a TLS connection in its extensions.
pub fn on_connect(connection: &dyn std::any::Any, extensions: &mut Extensions) {
    type Tls = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = connection.downcast_ref::<Tls>() {
        if let Some(cert) = tls.ssl().peer_certificate() {
            extensions.insert(PeerCertificate(cert));
        }
    }
}
