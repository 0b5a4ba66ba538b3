//! HTTPS on the player port: certificate and key files, ALPN (h2, http/1.1),
//! reloaded on SIGHUP.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[tls]`: both files set turn HTTPS (with HTTP/2) on for the player and
/// WHIP port; both empty keep plain HTTP.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}
