//! OpenSSL 3 keeps RC2, RC4 and other old ciphers in its "legacy" provider.
//! Older AS2 products still write PKCS#12 files with RC2-40 bags and some
//! partners still encrypt with RC2, so we load the legacy provider once, next
//! to the default one, before any key or message is opened.

use std::sync::OnceLock;

use openssl::provider::Provider;

static PROVIDERS: OnceLock<Result<(Provider, Provider), String>> = OnceLock::new();

/// Loads the default and legacy providers (idempotent, thread-safe).
///
/// Returns an error text if the legacy provider is missing; callers that only
/// need modern algorithms may go on, so this is reported rather than fatal.
pub fn init() -> Result<(), String> {
    let loaded = PROVIDERS.get_or_init(|| {
        openssl::init();
        // Loading "legacy" explicitly disables the implicit default provider,
        // so the default one is loaded too.
        let default = Provider::try_load(None, "default", true)
            .map_err(|e| format!("cannot load OpenSSL default provider: {e}"))?;
        let legacy = Provider::try_load(None, "legacy", true).map_err(|e| {
            format!("cannot load OpenSSL legacy provider (needed for RC2 and RC2-40 PKCS#12): {e}")
        })?;
        Ok((default, legacy))
    });
    match loaded {
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    }
}
