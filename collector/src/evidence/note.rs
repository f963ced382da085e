//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys:
//! a UTF-8 text ending in a newline, a blank line, and signature lines
//! `— <key name> <base64(key hash || signature)>`. The key hash is the
//! first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key);
//! the signature covers the text exactly (its final newline included).
//!
//! Pure: no I/O. Base64 is the standard alphabet with padding, written
//! here (a few lines) rather than taken as a dependency.

use labhours_shared::trust::{PublicKey, Signer};
use sha2::{Digest as _, Sha256};

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// Why a note does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("no signature by key {name} (key hash {hash}) in the note")]
    NoSignature { name: String, hash: String },
    #[error(
        "the signature by {name} does not verify: the note was changed or signed by another key"
    )]
    BadSignature { name: String },
}

/// A key name may not be empty, nor contain spaces or `+` (signed-note §Keys).
pub fn key_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '-'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "labhours".to_owned()
    } else {
        name
    }
}

/// The 4-byte key hash that names `key` under `name` in signature lines.
pub fn key_hash(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The verifier key in the signed-note text form:
/// `<name>+<hex key hash>+<base64(0x01 || public key)>`.
pub fn verifier_key(name: &str, key: &PublicKey) -> String {
    let mut bytes = vec![ED25519];
    bytes.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        labhours_shared::trust::hex(&key_hash(name, key)),
        base64_encode(&bytes)
    )
}

/// The name and key of a verifier key `<name>+<hex key hash>+<base64>`
/// (as [`verifier_key`] writes it); the error says what is wrong.
pub fn parse_verifier_key(text: &str) -> Result<(String, PublicKey), String> {
    // The base64 key may itself hold '+': only the first two separate.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected <name>+<key hash>+<base64 key>".into());
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("the key name {name:?} is empty or holds a space"));
    }
    let raw = base64_decode(b64).ok_or("the key is not base64")?;
    let [ED25519, key @ ..] = raw.as_slice() else {
        return Err("the key is not an Ed25519 key (type byte 0x01)".into());
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| format!("the key has {} bytes, not 32", key.len()))?;
    let key = PublicKey::from_bytes(key);
    if labhours_shared::trust::hex(&key_hash(name, &key)) != hash {
        return Err("the key hash does not match the name and key (a copying error?)".into());
    }
    Ok((name.to_owned(), key))
}

/// Signs `text` (which must end in a newline and hold no blank line) as `name`.
pub fn sign(text: &str, name: &str, signer: &Signer) -> String {
    debug_assert!(text.ends_with('\n') && !text.contains("\n\n"));
    let mut blob = key_hash(name, &signer.public_key()).to_vec();
    blob.extend_from_slice(&signer.sign(text.as_bytes()));
    format!("{text}\n\u{2014} {name} {}\n", base64_encode(&blob))
}

/// A note's text and its signature lines, unverified.
pub fn split(note: &str) -> Result<(&str, &str), NoteError> {
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    if !note.ends_with('\n') {
        return Err(NoteError::Malformed("it does not end in a newline".into()));
    }
    Ok((&note[..at + 1], &note[at + 2..]))
}

/// The text of `note` when it carries a valid signature by `key` as `name`.
pub fn open<'a>(note: &'a str, name: &str, key: &PublicKey) -> Result<&'a str, NoteError> {
    let (text, signatures) = split(note)?;
    let hash = key_hash(name, key);
    for line in signatures.lines() {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            NoteError::Malformed(format!(
                "signature line {line:?} does not start with \"— \""
            ))
        })?;
        let (line_name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?}")))?;
        let blob = base64_decode(b64)
            .ok_or_else(|| NoteError::Malformed(format!("signature {b64:?} is not base64")))?;
        if line_name != name || blob.len() != 4 + 64 || blob[..4] != hash {
            continue;
        }
        return if key.verifies(text.as_bytes(), &blob[4..]) {
            Ok(text)
        } else {
            Err(NoteError::BadSignature {
                name: name.to_owned(),
            })
        };
    }
    Err(NoteError::NoSignature {
        name: name.to_owned(),
        hash: labhours_shared::trust::hex(&hash),
    })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            let v = ALPHABET.iter().position(|&a| a == b)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad]);
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
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Z=9v"), None);
        assert_eq!(base64_decode("Zm9*"), None);
    }

    #[test]
    fn a_signed_note_opens_and_one_changed_byte_does_not() {
        let s = signer();
        let text = "labhours/site\ntime 2026-03-04T00:00:00Z\n";
        let note = sign(text, "labhours/site", &s);
        assert!(note.starts_with(text));
        assert!(note.contains("\n\n\u{2014} labhours/site "), "{note}");
        assert_eq!(open(&note, "labhours/site", &s.public_key()), Ok(text));
        let tampered = note.replacen("03-04", "03-05", 1);
        assert_eq!(
            open(&tampered, "labhours/site", &s.public_key()),
            Err(NoteError::BadSignature {
                name: "labhours/site".into()
            })
        );
        assert!(matches!(
            open(&note, "labhours/site", &signer().public_key()),
            Err(NoteError::NoSignature { .. })
        ));
        assert!(matches!(
            open(&note, "other", &s.public_key()),
            Err(NoteError::NoSignature { .. })
        ));
    }

    #[test]
    fn a_verifier_key_reads_back_and_a_changed_one_is_refused() {
        let s = signer();
        let vkey = verifier_key("labhours/site", &s.public_key());
        assert_eq!(
            parse_verifier_key(&vkey),
            Ok(("labhours/site".to_owned(), s.public_key()))
        );
        let other = verifier_key("labhours/other", &s.public_key());
        let (_, tail) = other.split_once('+').unwrap();
        let renamed = format!("labhours/site+{tail}");
        assert!(
            parse_verifier_key(&renamed)
                .unwrap_err()
                .contains("key hash")
        );
        assert!(parse_verifier_key("labhours/site").is_err());
        assert!(parse_verifier_key("labhours/site+00000000+!!").is_err());
    }

    #[test]
    fn key_names_have_no_spaces_or_plus() {
        assert_eq!(key_name("labhours/Main Lab+2"), "labhours/Main-Lab-2");
        assert_eq!(key_name(""), "labhours");
    }

    #[test]
    fn the_verifier_key_carries_the_key_hash() {
        let s = signer();
        let vkey = verifier_key("labhours/site", &s.public_key());
        // The base64 key may itself hold '+': only the first two separate.
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        assert_eq!(parts[0], "labhours/site");
        assert_eq!(
            parts[1],
            labhours_shared::trust::hex(&key_hash("labhours/site", &s.public_key()))
        );
        let raw = base64_decode(parts[2]).expect("base64");
        assert_eq!(raw[0], 1);
        assert_eq!(&raw[1..], s.public_key().as_bytes());
    }
}
