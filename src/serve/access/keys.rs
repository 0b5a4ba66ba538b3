//! Playback keys: ES384 (P-384) key pairs, their PEM forms, and signing a token
//! with one (for the CLI and tests; the node itself only verifies).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (-----BEGIN PUBLIC KEY-----)")]
    NotPem,
    #[error("not an ECDSA P-384 (secp384r1) public key")]
    NotP384,
    #[error("could not generate a key pair")]
    Generate,
}

/// DER prefix of an uncompressed ECDSA P-384 SubjectPublicKeyInfo
/// (RFC 5480): SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING
/// of 98 bytes }. Every such key is this prefix and the 97-byte point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// The uncompressed point (97 bytes, 0x04 || x || y) of a P-384 SPKI PEM.
fn p384_point(pem: &str) -> Result<Vec<u8>, KeyError> {
    let der = pem_der(pem, "PUBLIC KEY").ok_or(KeyError::NotPem)?;
    match der.strip_prefix(&P384_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 97 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err(KeyError::NotP384),
    }
}

pub(super) fn decoding_key(pem: &str) -> Result<DecodingKey, KeyError> {
    Ok(DecodingKey::from_ec_der(&p384_point(pem)?))
}

/// Checks an imported public key and returns it normalized (one PEM, 64
/// columns, trailing newline), what the registry stores.
pub fn normalize_public_pem(pem: &str) -> Result<String, KeyError> {
    let point = p384_point(pem)?;
    let mut der = P384_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&point);
    Ok(to_pem("PUBLIC KEY", &der))
}

/// A fresh playback key pair: (private key PKCS#8 PEM, public key SPKI PEM).
/// The private half goes to the operator once and is never stored.
pub fn generate_key_pair() -> Result<(String, String), KeyError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair =
        EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(|_| KeyError::Generate)?;
    let private = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
    let public = pair.public_key().as_der().map_err(|_| KeyError::Generate)?;
    Ok((
        to_pem("PRIVATE KEY", private.as_ref()),
        to_pem("PUBLIC KEY", public.as_ref()),
    ))
}

/// Signs `claims` as an ES384 playback token with a private key as
/// `generate_key_pair` prints it (PKCS#8 PEM); `kid` names the registered
/// key. What an operator's token service does, here for tests and tools.
pub fn sign_token(
    private_pem: &str,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<String, KeyError> {
    let der = pem_der(private_pem, "PRIVATE KEY").ok_or(KeyError::NotPem)?;
    let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let mut header = jsonwebtoken::Header::new(Algorithm::ES384);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).map_err(|_| KeyError::NotP384)
}

/// The DER inside a PEM block labelled `label`.
pub(super) fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix(&format!("-----BEGIN {label}-----"))?
        .strip_suffix(&format!("-----END {label}-----"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
