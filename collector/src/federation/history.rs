//! The hub's check of a site's signed checkpoints (docs/design/federation.md
//! #checkpoints-and-rewritten-history). Each forwarded checkpoint must be
//! signed by the site's collector key (`[[hub.sites]] checkpoint_key`) and
//! must extend the site's last good one: every agent chain it named is
//! still there, no shorter, and unchanged at the same length. A site whose
//! checkpoint does not extend its predecessor rewrote history, and is
//! flagged until an operator looks. Pure: the store reads and writes around it.

use labhours_shared::trust::{PublicKey, hex};

use crate::evidence::checkpoint::Body;
use crate::evidence::note;

/// A site's checkpoint key: the signed-note key name and public key.
pub type SiteKey = (String, PublicKey);

/// What the hub learnt from one forwarded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The body, when it could be read (a flagged note may still have one).
    pub body: Option<Body>,
    /// Its signature verified with the site's configured key.
    pub verified: bool,
    /// Why the site is flagged by it; `None`: it extends the last good one.
    pub problem: Option<String>,
}

/// Checks `note` from a site with `key` (when configured) against the
/// site's last good checkpoint `previous`.
pub fn check(note_text: &str, key: Option<&SiteKey>, previous: Option<&Body>) -> Checked {
    let text = match key {
        Some((name, key)) => note::open(note_text, name, key).map_err(|e| e.to_string()),
        None => note::split(note_text)
            .map(|(text, _)| text)
            .map_err(|e| e.to_string()),
    };
    let flagged = |problem: String, body: Option<Body>| Checked {
        body,
        verified: false,
        problem: Some(problem),
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => return flagged(format!("checkpoint not accepted: {e}"), None),
    };
    let body = match Body::parse(text) {
        Ok(body) => body,
        Err(e) => return flagged(format!("checkpoint not readable: {e}"), None),
    };
    let problem = previous.and_then(|prev| extends(prev, &body).err());
    Checked {
        body: Some(body),
        verified: key.is_some(),
        problem,
    }
}

/// `Ok` when `next` extends `prev`: signed no earlier, and every agent
/// chain of `prev` present in `next`, no shorter, with the same head when
/// of the same length. The error names the first chain that does not.
pub fn extends(prev: &Body, next: &Body) -> Result<(), String> {
    if next.time < prev.time {
        return Err(format!(
            "history rewritten: a checkpoint signed at {} comes after one signed at {}",
            next.time, prev.time
        ));
    }
    for old in &prev.heads {
        let agent = &old.agent_id;
        let Some(new) = next.head(agent) else {
            return Err(format!(
                "history rewritten: agent {agent}'s chain (seq {}) is gone from the checkpoint of {}",
                old.last_seq, next.time
            ));
        };
        if new.last_seq < old.last_seq {
            return Err(format!(
                "history rewritten: agent {agent}'s chain went back from seq {} to {} (checkpoint of {})",
                old.last_seq, new.last_seq, next.time
            ));
        }
        if new.last_seq == old.last_seq && new.head != old.head {
            return Err(format!(
                "history rewritten: agent {agent}'s chain head at seq {} changed from {} to {} (checkpoint of {})",
                old.last_seq,
                &hex(&old.head)[..16],
                &hex(&new.head)[..16],
                next.time
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use labhours_shared::trust::Signer;

    use super::*;
    use crate::evidence::checkpoint::Head;

    fn body(time: &str, heads: &[(&str, u64, u8)]) -> Body {
        Body {
            origin: "labhours/Campus-A".into(),
            time: time.parse::<Timestamp>().unwrap(),
            heads: heads
                .iter()
                .map(|&(agent, seq, byte)| Head {
                    agent_id: agent.into(),
                    last_seq: seq,
                    head: [byte; 32],
                })
                .collect(),
            inputs: Vec::new(),
        }
    }

    fn signer() -> Signer {
        Signer::from_pkcs8(&Signer::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn a_longer_or_equal_chain_extends_and_a_new_agent_is_fine() {
        let prev = body("2026-03-03T00:00:00Z", &[("a", 10, 1), ("b", 5, 2)]);
        let next = body(
            "2026-03-04T00:00:00Z",
            &[("a", 12, 3), ("b", 5, 2), ("c", 1, 4)],
        );
        assert_eq!(extends(&prev, &next), Ok(()));
        assert_eq!(extends(&prev, &prev), Ok(()));
    }

    #[test]
    fn a_changed_shorter_or_missing_chain_or_an_earlier_time_is_a_rewrite() {
        let prev = body("2026-03-03T00:00:00Z", &[("a", 10, 1)]);
        let cases = [
            (
                body("2026-03-04T00:00:00Z", &[("a", 10, 9)]),
                "head at seq 10 changed",
            ),
            (
                body("2026-03-04T00:00:00Z", &[("a", 9, 1)]),
                "went back from seq 10 to 9",
            ),
            (body("2026-03-04T00:00:00Z", &[]), "is gone"),
            (body("2026-03-02T00:00:00Z", &[("a", 10, 1)]), "comes after"),
        ];
        for (next, says) in cases {
            let e = extends(&prev, &next).unwrap_err();
            assert!(
                e.starts_with("history rewritten") && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn a_note_signed_by_another_key_or_edited_is_flagged_unverified() {
        let (site, other) = (signer(), signer());
        let name = "labhours/Campus-A".to_owned();
        let b = body("2026-03-03T00:00:00Z", &[("a", 10, 1)]);
        let signed = note::sign(&b.text(), &name, &site);
        let key = (name.clone(), site.public_key());

        let good = check(&signed, Some(&key), None);
        assert_eq!((good.verified, good.problem), (true, None));
        assert_eq!(good.body, Some(b.clone()));

        let forged = note::sign(&b.text(), &name, &other);
        let c = check(&forged, Some(&key), None);
        assert!(!c.verified && c.problem.unwrap().contains("no signature"));

        let edited = signed.replacen("agent a 10", "agent a 11", 1);
        let c = check(&edited, Some(&key), None);
        assert!(!c.verified && c.problem.unwrap().contains("does not verify"));

        // Without a configured key: read, compared, but not verified.
        let c = check(&signed, None, None);
        assert_eq!((c.verified, c.problem), (false, None));

        let garbled = check("not a note", Some(&key), None);
        assert!(garbled.problem.unwrap().contains("not accepted"));
    }

    #[test]
    fn a_signed_rewrite_is_flagged_against_the_previous_checkpoint() {
        let site = signer();
        let name = "labhours/Campus-A".to_owned();
        let key = (name.clone(), site.public_key());
        let prev = body("2026-03-03T00:00:00Z", &[("a", 10, 1)]);
        let rewritten = body("2026-03-04T00:00:00Z", &[("a", 10, 7)]);
        let c = check(
            &note::sign(&rewritten.text(), &name, &site),
            Some(&key),
            Some(&prev),
        );
        assert!(
            c.verified,
            "the signature is good: the site signed its rewrite"
        );
        assert!(c.problem.unwrap().contains("changed"));
    }
}
