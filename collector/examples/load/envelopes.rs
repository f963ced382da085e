//! Envelopes as simulated agents send them, shared by the ingest
//! benchmarks (`ingest_load` over MQTT, `ingest_cpu` straight into ingest).

use jiff::Timestamp;
use labhours_shared::state::State;
use labhours_shared::trust::{ChainHash, Signer, chain_hash};
use labhours_shared::wire::{
    ChainedEnvelope, Envelope, Event, EventKind, RawRecord, Summary, TransitionSource,
};

/// Event `seq`: a one-minute power summary, every 20th a transition.
pub fn summary(seq: u64, at: Timestamp) -> Event {
    let kind = if seq.is_multiple_of(20) {
        EventKind::Transition {
            from: State::Standby,
            to: State::Running,
            source: TransitionSource::Power,
            reason: "power 1520.0 W ≥ running_above_w 1500 W".into(),
        }
    } else {
        EventKind::Summary(Summary {
            end: at,
            samples: 60,
            failed_reads: 0,
            min_w: Some(1490.0),
            avg_w: Some(1512.5),
            max_w: Some(1530.0),
            energy_wh: 25.2,
            covered_s: 60.0,
            avg_v: Some(229.8),
            avg_a: Some(6.6),
        })
    };
    Event { seq, at, kind }
}

/// The payload of one envelope in the chosen form; `head` is the agent's
/// chain head, moved on by the events.
pub fn payload(
    envelope: &Envelope,
    head: &mut ChainHash,
    mode: &str,
    signer: Option<&Signer>,
) -> anyhow::Result<Vec<u8>> {
    if mode == "v1" {
        return Ok(envelope.encode());
    }
    let records = envelope
        .events
        .iter()
        .map(|e| {
            let json = serde_json::to_string(e)?;
            let record = RawRecord {
                seq: e.seq,
                prev: *head,
                json,
            };
            *head = chain_hash(head, record.json.as_bytes());
            Ok(record)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let message = ChainedEnvelope {
        agent_id: &envelope.agent_id,
        instrument_id: &envelope.instrument_id,
        sent_at: envelope.sent_at,
        acked_through: envelope.acked_through,
        key_id: signer.map(Signer::key_id),
        rotation: None,
    }
    .encode(&records)?;
    Ok(match signer {
        Some(s) => s.sign_payload(&message),
        None => message,
    })
}
