//! Delivery end to end on Mosquitto, which the tests start themselves (from
//! `LABHOURS_MOSQUITTO_BIN`) so that they can kill and restart it.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh` (peer `mosquitto`) runs
//! them with `--ignored`.

use labhours_tests::brokers::{Mosquitto, mosquitto_bin};
use labhours_tests::delivery_scenarios as scenario;

fn mosquitto() -> Mosquitto {
    Mosquitto::start(&mosquitto_bin())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_restarted_mid_stream_loses_nothing() {
    let mut broker = mosquitto();
    scenario::broker_restart(&mut broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_carries_a_steady_stream_exactly_once() {
    let broker = mosquitto();
    scenario::steady_stream(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_lost_session_is_rebuilt() {
    let broker = mosquitto();
    scenario::lost_session(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_collector_restart_is_covered_by_resends() {
    let broker = mosquitto();
    scenario::collector_restart(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_lost_ack_is_resent_and_counted_once() {
    let broker = mosquitto();
    scenario::duplicate_delivery(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_restarted_agent_delivers_its_outbox() {
    let broker = mosquitto();
    scenario::agent_restart(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_publishes_the_last_will() {
    let broker = mosquitto();
    scenario::last_will(broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_over_tls_with_a_client_certificate() {
    scenario::tls_with_client_certificate().await;
}
