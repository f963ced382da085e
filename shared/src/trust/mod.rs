//! Evidence an evaluator can check without trusting the collector
//! (docs/design/trust.md): agents' Ed25519 keys, signatures over the exact
//! bytes of a message, and the per-event hash chain.
//!
//! Pure apart from [`key_file`], which reads and writes key files.

mod chain;
pub mod key_file;
mod rotation;

pub use chain::{ChainHash, chain_hash};
pub use rotation::Rotation;

use std::fmt;
use std::str::FromStr;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// An agent's public key, written `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

/// Names a key in messages: the first 8 bytes of SHA-256 of the public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

const PREFIX: &str = "ed25519:";

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn key_id(&self) -> KeyId {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Whether `signature` is this key's signature over exactly `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a public key or key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseKeyError(String);

impl FromStr for PublicKey {
    type Err = ParseKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.trim().strip_prefix(PREFIX).ok_or_else(|| {
            ParseKeyError(format!(
                "{text:?} is not a public key: expected {PREFIX} and 64 hex digits, as printed by `labhours-agent keygen`"
            ))
        })?;
        from_hex::<32>(digits).map(Self).ok_or_else(|| {
            ParseKeyError(format!(
                "{text:?} is not a public key: after {PREFIX} come 64 hex digits"
            ))
        })
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for KeyId {
    type Err = ParseKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        from_hex::<8>(text)
            .map(Self)
            .ok_or_else(|| ParseKeyError(format!("{text:?} is not a key id (16 hex digits)")))
    }
}

/// An agent's private key, able to sign.
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
    /// The previous key's endorsement of this one, sent with every
    /// envelope until the collector has enrolled this key.
    rotation: Option<Rotation>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Signer")
            .field("public", &self.public)
            .field("rotation", &self.rotation)
            .finish()
    }
}

impl Signer {
    /// From a PKCS#8 (v1 or v2) Ed25519 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ParseKeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| ParseKeyError(format!("not an Ed25519 private key (PKCS#8): {e}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pair,
            public: PublicKey(public),
            rotation: None,
        })
    }

    /// This key as the successor of `previous` for `agent_id`: envelopes
    /// then carry `previous`'s signed endorsement of this key, which lets
    /// the collector enrol it without an admin (docs/design/trust.md#rotation).
    pub fn rotated_from(mut self, previous: &Signer, agent_id: &str) -> Self {
        self.rotation = Some(Rotation::sign(previous, agent_id, self.public));
        self
    }

    pub fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_ref()
    }

    /// The raw Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// A new random key, as PKCS#8 bytes (to be written to a key file).
    pub fn generate_pkcs8() -> Result<Vec<u8>, ParseKeyError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|e| ParseKeyError(format!("no key could be generated: {e}")))
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// `message`, a newline, and the hex signature over `message`'s exact
    /// bytes: the form a signed MQTT payload takes.
    pub fn sign_payload(&self, message: &[u8]) -> Vec<u8> {
        let signature = self.pair.sign(message);
        let mut out = Vec::with_capacity(message.len() + 1 + 128);
        out.extend_from_slice(message);
        out.push(b'\n');
        out.extend_from_slice(hex(signature.as_ref()).as_bytes());
        out
    }
}

/// A payload split into the signed message and its signature. Unsigned
/// payloads (plain JSON, which never ends in a line of hex) have none.
pub fn split_signed(payload: &[u8]) -> (&[u8], Option<Vec<u8>>) {
    let Some(newline) = payload.iter().rposition(|&b| b == b'\n') else {
        return (payload, None);
    };
    let (message, tail) = (&payload[..newline], &payload[newline + 1..]);
    match from_hex::<64>(std::str::from_utf8(tail).unwrap_or("")) {
        Some(signature) => (message, Some(signature.to_vec())),
        None => (payload, None),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `write!`: result files are hashed on the agent's hot path.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Exactly `N` bytes from `2N` hex digits (either case).
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::from_pkcs8(&Signer::generate_pkcs8().expect("key")).expect("parses")
    }

    #[test]
    fn a_signed_payload_verifies_and_one_changed_byte_does_not() {
        let signer = signer();
        let message = br#"{"v":2,"events":[]}"#;
        let payload = signer.sign_payload(message);
        let (body, signature) = split_signed(&payload);
        assert_eq!(body, message);
        let signature = signature.expect("signed");
        assert!(signer.public_key().verifies(body, &signature));
        let mut tampered = body.to_vec();
        tampered[3] ^= 1;
        assert!(!signer.public_key().verifies(&tampered, &signature));
        assert!(!signer_other().public_key().verifies(body, &signature));
    }

    fn signer_other() -> Signer {
        signer()
    }

    #[test]
    fn plain_json_is_unsigned() {
        let json = b"{\"v\":1}";
        assert_eq!(split_signed(json), (&json[..], None));
        let pretty = b"{\n  \"v\": 1\n}";
        assert_eq!(split_signed(pretty), (&pretty[..], None));
    }

    #[test]
    fn public_keys_and_ids_read_back_what_they_print() {
        let key = signer().public_key();
        let text = key.to_string();
        assert!(
            text.starts_with("ed25519:") && text.len() == 8 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<PublicKey>(), Ok(key));
        assert_eq!(key.key_id().to_string().parse::<KeyId>(), Ok(key.key_id()));
        let err = "ed25519:zz".parse::<PublicKey>().unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        assert!("abc".parse::<PublicKey>().is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex::<3>("00ABff"), Some([0, 0xab, 0xff]));
        assert_eq!(from_hex::<3>("00abf"), None);
        assert_eq!(from_hex::<3>("00abfg"), None);
    }
}
