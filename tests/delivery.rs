//! Delivery end to end on a real broker: rumqttd embedded in the test
//! process, a test collector (tests/support/fake_collector.rs), and the
//! agent's real outbox and `Delivery`. See tests/support/delivery_scenarios.rs.

use labhours_tests::brokers::Rumqttd;
use labhours_tests::delivery_scenarios as scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_is_committed_exactly_once() {
    scenario::steady_stream(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_rebuilt_and_nothing_is_lost() {
    scenario::lost_session(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restart_is_covered_by_resends_after_the_ack_timeout() {
    scenario::collector_restart(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_makes_the_agent_resend_and_the_collector_counts_once() {
    scenario::duplicate_delivery(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_delivers_what_its_outbox_kept() {
    scenario::agent_restart(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_vanishes_leaves_its_last_will() {
    scenario::last_will(Rumqttd::start().port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_the_password_file_is_accepted_and_a_wrong_one_refused() {
    let users = [("collector", "c0llector"), ("agent", "s3cret")];
    scenario::credentials(Rumqttd::start_with_users(&users).port, &users).await;
}
