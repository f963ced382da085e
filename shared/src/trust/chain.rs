//! The per-event hash chain: each event's hash covers the previous hash and
//! the event's exact bytes as stored and sent, so any edit, insertion or
//! removal inside an agent's history changes every later hash.

use sha2::{Digest as _, Sha256};

/// A link of an agent's chain (SHA-256). The chain starts from all zeros.
pub type ChainHash = [u8; 32];

/// `SHA-256(prev || event_bytes)`.
pub fn chain_hash(prev: &ChainHash, event_bytes: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(event_bytes);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_or_order_changes_the_head() {
        let events: [&[u8]; 3] = [b"{\"seq\":1}", b"{\"seq\":2}", b"{\"seq\":3}"];
        let head = |evs: &[&[u8]]| evs.iter().fold([0u8; 32], |h, e| chain_hash(&h, e));
        let original = head(&events);
        assert_ne!(head(&[events[0], events[2], events[1]]), original);
        assert_ne!(head(&[events[0], b"{\"seq\":2 }", events[2]]), original);
        assert_ne!(head(&events[..2]), original);
        assert_eq!(head(&events), original);
    }
}
