//! Key rotation: the agent's previous key signs a statement naming its
//! successor, so the collector can enrol the new key on the old one's word
//! and the agent never stops (docs/design/trust.md#rotation). The statement
//! is text with a fixed prefix, so a signature over it can never be
//! mistaken for one over an envelope (those start with `{`).

use super::{KeyId, PublicKey, Signer, from_hex, hex};

/// `from` (the previous key) endorses `to` as the same agent's next key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub from: KeyId,
    pub to: PublicKey,
    pub signature: [u8; 64],
}

/// What the previous key signs.
fn statement(agent_id: &str, from: &KeyId, to: &PublicKey) -> Vec<u8> {
    format!("labhours key rotation v1\nagent {agent_id}\nfrom {from}\nto {to}\n").into_bytes()
}

impl Rotation {
    pub fn sign(previous: &Signer, agent_id: &str, to: PublicKey) -> Self {
        let from = previous.key_id();
        Self {
            from,
            to,
            signature: previous.sign(&statement(agent_id, &from, &to)),
        }
    }

    /// Whether `previous` (the key `from` names) signed this for `agent_id`.
    pub fn verifies(&self, agent_id: &str, previous: &PublicKey) -> bool {
        previous.key_id() == self.from
            && previous.verifies(&statement(agent_id, &self.from, &self.to), &self.signature)
    }

    pub fn signature_hex(&self) -> String {
        hex(&self.signature)
    }

    /// From the envelope's text fields; `None` names the bad field.
    pub fn parse(from: &str, to: &str, signature: &str) -> Result<Self, &'static str> {
        Ok(Self {
            from: from.parse().map_err(|_| "rotation.from")?,
            to: to.parse().map_err(|_| "rotation.to")?,
            signature: from_hex::<64>(signature).ok_or("rotation.signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Signer {
        Signer::from_pkcs8(&Signer::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn the_previous_key_endorses_its_successor_for_one_agent_only() {
        let (old, new, other) = (key(), key(), key());
        let new = new.rotated_from(&old, "lab-a");
        let rotation = new.rotation().unwrap().clone();
        assert_eq!(rotation.from, old.key_id());
        assert_eq!(rotation.to, new.public_key());
        assert!(rotation.verifies("lab-a", &old.public_key()));
        assert!(!rotation.verifies("lab-b", &old.public_key()));
        assert!(!rotation.verifies("lab-a", &other.public_key()));
        let forged = Rotation {
            to: other.public_key(),
            ..rotation.clone()
        };
        assert!(!forged.verifies("lab-a", &old.public_key()));
        let parsed = Rotation::parse(
            &rotation.from.to_string(),
            &rotation.to.to_string(),
            &rotation.signature_hex(),
        )
        .unwrap();
        assert_eq!(parsed, rotation);
        assert_eq!(
            Rotation::parse("x", &rotation.to.to_string(), &rotation.signature_hex()),
            Err("rotation.from")
        );
    }
}
