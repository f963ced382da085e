//! Envelope version 2: events carried **verbatim** as the agent stored
//! them, so the collector hashes the very bytes the agent hashed, with the
//! hash before the first event (`prev`), a `breaks` entry for every event
//! that does not follow the one before it, and — when the agent signs — its
//! `key_id` and a signature line after the JSON (docs/protocol.md,
//! docs/design/trust.md).

use std::collections::BTreeMap;
use std::ops::Deref;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DecodeError, ENVELOPE_VERSION, Envelope, Event, SCHEMA_VERSION, Versioned, invalid};
use crate::trust::{ChainHash, KeyId, Rotation, chain_hash, from_hex, hex, split_signed};

/// One outbox record as delivered: its seq, the chain hash of the seq
/// before it, and its JSON exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub seq: u64,
    pub prev: ChainHash,
    pub json: String,
}

/// The hash before an event that does not follow the previous event of
/// its envelope (a seq the outbox dropped, or the live lane's events
/// riding with the backlog's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub seq: u64,
    /// Hex `h(seq - 1)`.
    pub prev: String,
}

/// The header of a version 2 envelope; [`ChainedEnvelope::encode`] adds the events.
#[derive(Debug, Clone)]
pub struct ChainedEnvelope<'a> {
    pub agent_id: &'a str,
    pub instrument_id: &'a str,
    pub sent_at: Timestamp,
    pub acked_through: u64,
    /// The signing key; `None` for an unsigned agent.
    pub key_id: Option<KeyId>,
    /// The previous key's endorsement of `key_id`, while rotating.
    pub rotation: Option<&'a Rotation>,
}

/// `rotation` as it travels: `from` key id, `to` public key, the previous
/// key's signature (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RotationWire {
    from: String,
    to: String,
    signature: String,
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    agent_id: &'a str,
    instrument_id: &'a str,
    sent_at: Timestamp,
    acked_through: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<RotationWire>,
    prev: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    breaks: Vec<ChainBreak>,
    events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct In {
    v: u32,
    agent_id: String,
    instrument_id: String,
    sent_at: Timestamp,
    acked_through: u64,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    rotation: Option<RotationWire>,
    prev: String,
    #[serde(default)]
    breaks: Vec<ChainBreak>,
    events: Vec<Box<RawValue>>,
}

impl ChainedEnvelope<'_> {
    /// The envelope's exact bytes, `records` (in seq order) carried verbatim.
    /// Errs only when a record is not JSON (a damaged outbox record).
    pub fn encode(&self, records: &[RawRecord]) -> Result<Vec<u8>, serde_json::Error> {
        let events = records
            .iter()
            .map(|r| serde_json::from_str::<&RawValue>(&r.json))
            .collect::<Result<Vec<_>, _>>()?;
        let breaks = records
            .windows(2)
            .filter(|w| w[1].seq != w[0].seq + 1)
            .map(|w| ChainBreak {
                seq: w[1].seq,
                prev: hex(&w[1].prev),
            })
            .collect();
        serde_json::to_vec(&Out {
            v: ENVELOPE_VERSION,
            agent_id: self.agent_id,
            instrument_id: self.instrument_id,
            sent_at: self.sent_at,
            acked_through: self.acked_through,
            key_id: self.key_id.map(|k| k.to_string()),
            rotation: self.rotation.map(|r| RotationWire {
                from: r.from.to_string(),
                to: r.to.to_string(),
                signature: r.signature_hex(),
            }),
            prev: hex(&records.first().map_or([0; 32], |r| r.prev)),
            breaks,
            events,
        })
    }
}

/// A run of consecutive seqs in one envelope and the hash before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRun {
    pub first: u64,
    pub prev: ChainHash,
}

/// What a version 2 envelope says about the agent's chain, recomputed from
/// the bytes received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub key_id: Option<KeyId>,
    /// The previous key's endorsement of `key_id` (a rotating agent).
    pub rotation: Option<Rotation>,
    /// Every run of consecutive seqs, with the hash it continues from.
    pub runs: Vec<ChainRun>,
    /// Each event's chain hash, in the order of the envelope's events.
    pub hashes: Vec<ChainHash>,
    /// Each event's JSON exactly as received.
    pub raw: Vec<String>,
}

/// The signed part of a payload and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
}

/// An envelope of either version, as decoded from a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub envelope: Envelope,
    /// Version 2 only.
    pub chain: Option<Chain>,
    /// When the payload ended in a signature line.
    pub signed: Option<Signed>,
}

impl Deref for Incoming {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        &self.envelope
    }
}

impl From<Envelope> for Incoming {
    fn from(envelope: Envelope) -> Self {
        Self {
            envelope,
            chain: None,
            signed: None,
        }
    }
}

impl Incoming {
    /// The payload as it was published (JSON, then the signature line if any).
    pub fn payload(&self) -> Vec<u8> {
        match &self.signed {
            Some(s) => {
                let mut out = s.message.clone();
                out.push(b'\n');
                out.extend_from_slice(hex(&s.signature).as_bytes());
                out
            }
            None if self.chain.is_some() => self.reencode_unsigned(),
            None => self.envelope.encode(),
        }
    }

    fn reencode_unsigned(&self) -> Vec<u8> {
        let chain = self.chain.as_ref().expect("checked by the caller");
        let records: Vec<RawRecord> = self
            .envelope
            .events
            .iter()
            .zip(&chain.raw)
            .enumerate()
            .map(|(i, (e, raw))| RawRecord {
                seq: e.seq,
                prev: chain.runs.iter().find(|r| r.first == e.seq).map_or_else(
                    || if i == 0 { [0; 32] } else { chain.hashes[i - 1] },
                    |r| r.prev,
                ),
                json: raw.clone(),
            })
            .collect();
        ChainedEnvelope {
            agent_id: &self.envelope.agent_id,
            instrument_id: &self.envelope.instrument_id,
            sent_at: self.envelope.sent_at,
            acked_through: self.envelope.acked_through,
            key_id: chain.key_id,
            rotation: chain.rotation.as_ref(),
        }
        .encode(&records)
        .unwrap_or_else(|_| self.envelope.encode())
    }
}

/// Decodes an envelope of version 1 (typed events, unsigned) or 2 (raw
/// events, chained, maybe signed) from an MQTT payload.
pub fn decode_envelope(payload: &[u8]) -> Result<Incoming, DecodeError> {
    let (message, signature) = split_signed(payload);
    let signed = signature.map(|signature| Signed {
        message: message.to_vec(),
        signature,
    });
    match serde_json::from_slice::<In>(message) {
        Ok(incoming) if incoming.v == ENVELOPE_VERSION => {
            let (envelope, chain) = chained(incoming)?;
            Ok(Incoming {
                envelope,
                chain: Some(chain),
                signed,
            })
        }
        parsed => {
            #[derive(Deserialize)]
            struct Probe {
                v: Option<u32>,
            }
            let version = serde_json::from_slice::<Probe>(message).ok().map(|p| p.v);
            match (version, parsed) {
                (Some(Some(SCHEMA_VERSION)), _) => {
                    if signed.is_some() {
                        return Err(invalid(
                            "v",
                            "a version 1 envelope is never signed (signed agents send version 2)",
                        ));
                    }
                    Envelope::decode(message).map(Incoming::from)
                }
                (Some(None), _) => Err(DecodeError::MissingVersion),
                (Some(Some(found)), _) if found != ENVELOPE_VERSION => {
                    Err(DecodeError::UnsupportedVersion {
                        found,
                        supported: ENVELOPE_VERSION,
                    })
                }
                (_, Err(err)) => Err(DecodeError::Malformed {
                    line: err.line(),
                    column: err.column(),
                    message: err.to_string(),
                }),
                (_, Ok(_)) => unreachable!("version 2 is handled above"),
            }
        }
    }
}

fn hash_field(field: &str, text: &str) -> Result<ChainHash, DecodeError> {
    from_hex::<32>(text).ok_or_else(|| invalid(field, "expected 64 hex digits (a SHA-256 hash)"))
}

fn chained(incoming: In) -> Result<(Envelope, Chain), DecodeError> {
    let In {
        v,
        agent_id,
        instrument_id,
        sent_at,
        acked_through,
        key_id,
        rotation,
        prev,
        breaks,
        events: raw_events,
    } = incoming;
    let rotation = rotation
        .map(|r| {
            Rotation::parse(&r.from, &r.to, &r.signature)
                .map_err(|field| invalid(field, "is not a key id, public key or signature"))
        })
        .transpose()?;
    let key_id = key_id
        .map(|k| {
            k.parse::<KeyId>()
                .map_err(|e| invalid("key_id", e.to_string()))
        })
        .transpose()?;
    let prev = hash_field("prev", &prev)?;
    let mut pending_breaks = BTreeMap::new();
    for (i, b) in breaks.iter().enumerate() {
        let hash = hash_field(&format!("breaks[{i}].prev"), &b.prev)?;
        if pending_breaks.insert(b.seq, hash).is_some() {
            return Err(invalid(
                format!("breaks[{i}].seq"),
                format!("seq {} is named twice", b.seq),
            ));
        }
    }
    let mut events = Vec::with_capacity(raw_events.len());
    let mut runs: Vec<ChainRun> = Vec::new();
    let mut hashes = Vec::with_capacity(raw_events.len());
    let mut raw = Vec::with_capacity(raw_events.len());
    let mut head = prev;
    for (i, event_raw) in raw_events.into_iter().enumerate() {
        let bytes = event_raw.get();
        let event: Event = serde_json::from_str(bytes).map_err(|err| DecodeError::Malformed {
            line: err.line(),
            column: err.column(),
            message: format!("events[{i}]: {err}"),
        })?;
        let field = || format!("events[{i}].seq");
        match events.last().map(|e: &Event| e.seq) {
            None => runs.push(ChainRun {
                first: event.seq,
                prev,
            }),
            Some(last) if event.seq == last + 1 => {}
            Some(last) if event.seq > last => {
                head = pending_breaks.remove(&event.seq).ok_or_else(|| {
                    invalid(
                        field(),
                        format!(
                            "seq {} does not follow {last} and `breaks` gives no prev for it",
                            event.seq
                        ),
                    )
                })?;
                runs.push(ChainRun {
                    first: event.seq,
                    prev: head,
                });
            }
            Some(last) => {
                return Err(invalid(
                    field(),
                    format!("seq {} after {last}: seqs must increase", event.seq),
                ));
            }
        }
        head = chain_hash(&head, bytes.as_bytes());
        hashes.push(head);
        raw.push(bytes.to_owned());
        events.push(event);
    }
    if let Some(seq) = pending_breaks.keys().next() {
        return Err(invalid(
            "breaks",
            format!("seq {seq} is not an event of this envelope that follows a gap"),
        ));
    }
    let envelope = Envelope {
        v,
        agent_id,
        instrument_id,
        sent_at,
        acked_through,
        events,
    };
    envelope.check()?;
    Ok((
        envelope,
        Chain {
            key_id,
            rotation,
            runs,
            hashes,
            raw,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Signer;
    use crate::wire::{EventKind, SeqRange};

    fn record(seq: u64, prev: ChainHash) -> RawRecord {
        let event = Event {
            seq,
            at: "2026-11-22T08:00:00Z".parse().unwrap(),
            kind: EventKind::Fault {
                source: "meter:main".into(),
                message: format!("timeout {seq} ü"),
            },
        };
        RawRecord {
            seq,
            prev,
            json: serde_json::to_string(&event).unwrap(),
        }
    }

    /// Records `seqs` chained from zero as an outbox would (hashes over
    /// every seq from 1, so gaps keep the true prev).
    fn records(seqs: &[u64]) -> Vec<RawRecord> {
        let last = *seqs.iter().max().unwrap();
        let mut h = [0u8; 32];
        let mut out = Vec::new();
        for seq in 1..=last {
            let r = record(seq, h);
            h = chain_hash(&h, r.json.as_bytes());
            if seqs.contains(&seq) {
                out.push(r);
            }
        }
        out
    }

    fn header() -> ChainedEnvelope<'static> {
        ChainedEnvelope {
            agent_id: "nmr-pc",
            instrument_id: "nmr-600",
            sent_at: "2026-11-22T08:00:05Z".parse().unwrap(),
            acked_through: 2,
            key_id: None,
            rotation: None,
        }
    }

    #[test]
    fn events_travel_verbatim_and_the_collector_recomputes_the_agents_hashes() {
        let recs = records(&[3, 4, 5, 9, 10]);
        let bytes = header().encode(&recs).unwrap();
        let incoming = decode_envelope(&bytes).expect("decodes");
        let chain = incoming.chain.as_ref().expect("v2");
        assert_eq!(
            chain.raw,
            recs.iter().map(|r| r.json.clone()).collect::<Vec<_>>()
        );
        let expected: Vec<ChainHash> = recs
            .iter()
            .map(|r| chain_hash(&r.prev, r.json.as_bytes()))
            .collect();
        assert_eq!(chain.hashes, expected);
        assert_eq!(
            chain.runs,
            vec![
                ChainRun {
                    first: 3,
                    prev: recs[0].prev
                },
                ChainRun {
                    first: 9,
                    prev: recs[3].prev
                }
            ]
        );
        assert_eq!(incoming.events.len(), 5);
        assert_eq!(incoming.v, ENVELOPE_VERSION);
        assert!(incoming.signed.is_none());
        assert_eq!(incoming.payload(), bytes);
    }

    #[test]
    fn a_gap_without_its_break_or_a_stray_break_is_invalid() {
        let recs = records(&[3, 5]);
        let bytes = header().encode(&recs).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        json["breaks"] = serde_json::json!([]);
        let err = decode_envelope(json.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Invalid { ref field, .. } if field == "events[1].seq"),
            "{err}"
        );
        json["breaks"] = serde_json::json!([{"seq": 5, "prev": hex(&recs[1].prev)}, {"seq": 4, "prev": hex(&[0; 32])}]);
        let err = decode_envelope(json.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Invalid { ref field, .. } if field == "breaks"),
            "{err}"
        );
    }

    #[test]
    fn one_changed_byte_in_an_event_changes_its_hash_and_every_later_one() {
        let recs = records(&[1, 2, 3]);
        let mut forged = recs.clone();
        forged[1].json = forged[1].json.replace("timeout 2", "timeout 7");
        let a = decode_envelope(&header().encode(&recs).unwrap()).unwrap();
        let b = decode_envelope(&header().encode(&forged).unwrap()).unwrap();
        let (a, b) = (a.chain.unwrap().hashes, b.chain.unwrap().hashes);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_ne!(a[2], b[2]);
    }

    #[test]
    fn a_signed_envelope_keeps_its_exact_bytes_and_signature() {
        let signer = Signer::from_pkcs8(&Signer::generate_pkcs8().unwrap()).unwrap();
        let recs = records(&[1, 2]);
        let message = ChainedEnvelope {
            key_id: Some(signer.key_id()),
            ..header()
        }
        .encode(&recs)
        .unwrap();
        let payload = signer.sign_payload(&message);
        let incoming = decode_envelope(&payload).expect("decodes");
        let signed = incoming.signed.as_ref().expect("signed");
        assert_eq!(signed.message, message);
        assert!(
            signer
                .public_key()
                .verifies(&signed.message, &signed.signature)
        );
        assert_eq!(
            incoming.chain.as_ref().unwrap().key_id,
            Some(signer.key_id())
        );
        assert_eq!(incoming.payload(), payload);
    }

    #[test]
    fn version_1_is_still_decoded_and_other_versions_are_named() {
        let v1 = Envelope {
            v: SCHEMA_VERSION,
            agent_id: "a".into(),
            instrument_id: "i".into(),
            sent_at: "2026-11-22T08:00:05Z".parse().unwrap(),
            acked_through: 0,
            events: vec![Event {
                seq: 1,
                at: "2026-11-22T08:00:00Z".parse().unwrap(),
                kind: EventKind::Dropped {
                    ranges: vec![SeqRange { first: 1, last: 1 }],
                    count: 1,
                    reason: "x".into(),
                },
            }],
        };
        let incoming = decode_envelope(&v1.encode()).expect("v1");
        assert!(incoming.chain.is_none());
        assert_eq!(incoming.envelope, v1);
        let err = decode_envelope(br#"{"v":3,"x":1}"#).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        );
        assert_eq!(
            decode_envelope(br#"{"agent_id":"a"}"#).unwrap_err(),
            DecodeError::MissingVersion
        );
        let err = decode_envelope(br#"{"v":2,"agent_id":"a"}"#).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
    }
}
