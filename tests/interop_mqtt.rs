//! Real-peer check: a Mosquitto broker carries a wire envelope unchanged.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh` starts Mosquitto on a free
//! loopback port, sets `LABHOURS_MOSQUITTO=host:port` and runs these with
//! `--ignored`.

use std::time::Duration;

use labhours_shared::state::State;
use labhours_shared::wire::{
    Envelope, Event, EventKind, SCHEMA_VERSION, TopicKind, Topics, TransitionSource,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

fn broker() -> (String, u16) {
    let addr = std::env::var("LABHOURS_MOSQUITTO").expect(
        "LABHOURS_MOSQUITTO=host:port must name a running Mosquitto (tests/interop/run.sh sets it)",
    );
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("numeric port"))
}

#[tokio::test]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_returns_an_envelope_that_decodes_to_the_one_sent() {
    let (host, port) = broker();
    let mut options = MqttOptions::new("labhours-interop-check", host, port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);

    let topics = Topics::default();
    let topic = topics.topic("interop-agent", TopicKind::Events);
    let sent = Envelope {
        v: SCHEMA_VERSION,
        agent_id: "interop-agent".into(),
        instrument_id: "nmr-600".into(),
        sent_at: jiff::Timestamp::now(),
        acked_through: 0,
        events: vec![Event {
            seq: 1,
            at: "2026-11-22T08:00:00Z".parse().expect("timestamp"),
            kind: EventKind::Transition {
                from: State::Standby,
                to: State::Running,
                source: TransitionSource::Power,
                reason: "power 1520.0 W ≥ running_above_w 1500 W".into(),
            },
        }],
    };
    client
        .subscribe(topics.all_agents(TopicKind::Events), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");

    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await.expect("broker reachable") {
                MqttEvent::Incoming(Packet::SubAck(_)) => {
                    client
                        .publish(&topic, QoS::AtLeastOnce, false, sent.encode())
                        .await
                        .expect("publish queued");
                }
                MqttEvent::Incoming(Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await
    .expect("the message came back within 10 s");

    assert_eq!(received.topic, topic);
    assert_eq!(
        topics.parse(&received.topic),
        Some(("interop-agent", TopicKind::Events))
    );
    assert_eq!(Envelope::decode(&received.payload).expect("decodes"), sent);
}
