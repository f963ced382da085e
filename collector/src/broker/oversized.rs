//! Payloads the embedded broker refuses for their size.
//!
//! rumqttd reads a packet's length first and, when it is above
//! [`super::MAX_PAYLOAD_BYTES`], drops the publisher's connection without
//! reading it, so the payload never reaches ingest and its quarantine. All
//! that is left is rumqttd's own log line (an error event whose `error`
//! field names `PayloadSizeLimitExceeded(<bytes>)`, inside the connection's
//! span that carries `client_id`). [`OversizedWatch`] turns that line into a
//! counter and a warning of the collector's own, at every log level.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Payloads refused by the embedded broker since start.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many payloads the embedded broker refused for their size since start.
pub fn refused_payloads() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// The size rumqttd reports in `PayloadSizeLimitExceeded(<bytes>)`, if any.
pub fn refused_size(error: &str) -> Option<u64> {
    let (_, rest) = error.split_once("PayloadSizeLimitExceeded(")?;
    rest.split(')').next()?.trim().parse().ok()
}

/// The layer that watches rumqttd's log for refused payloads (install it
/// with `LogConfig::init_with`).
#[derive(Debug, Default)]
pub struct OversizedWatch;

impl OversizedWatch {
    /// The layer with its own filter: rumqttd's errors, whatever the log level.
    pub fn layer<S>() -> impl Layer<S> + Send + Sync
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        OversizedWatch.with_filter(Targets::new().with_target("rumqttd", LevelFilter::ERROR))
    }
}

/// `client_id` of a rumqttd connection span, once recorded.
#[derive(Debug)]
struct ClientId(String);

#[derive(Default)]
struct Fields {
    client_id: Option<String>,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "client_id" {
            self.client_id = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "client_id" => self.client_id = Some(format!("{value:?}").trim_matches('"').to_owned()),
            "error" => self.error = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S> Layer<S> for OversizedWatch
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(client_id), Some(span)) = (fields.client_id, ctx.span(id)) {
            span.extensions_mut().replace(ClientId(client_id));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let (Some(client_id), Some(span)) = (fields.client_id, ctx.span(id)) {
            span.extensions_mut().replace(ClientId(client_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(bytes) = fields.error.as_deref().and_then(refused_size) else {
            return;
        };
        let client_id = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<ClientId>().map(|c| c.0.clone()))
        });
        let total = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            target: "labhours_collector::broker",
            client_id = client_id.as_deref().unwrap_or("unknown"),
            bytes,
            limit = super::MAX_PAYLOAD_BYTES,
            refused_total = total,
            "the embedded broker refused an oversized payload and closed the publisher's connection"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_size_is_read_from_rumqttds_error() {
        let e = "Network(Protocol(PayloadSizeLimitExceeded(5242885)))";
        assert_eq!(refused_size(e), Some(5_242_885));
        assert_eq!(refused_size("Io(Kind(ConnectionReset))"), None);
    }

    #[test]
    fn a_refusal_logged_inside_a_connection_span_is_counted_with_its_client() {
        let subscriber = tracing_subscriber::registry().with(OversizedWatch::layer());
        let before = refused_payloads();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!(
                target: "rumqttd::server::broker",
                "remote_link",
                client_id = tracing::field::Empty
            );
            span.record("client_id", "agent-7");
            let _in = span.enter();
            tracing::error!(
                target: "rumqttd::server::broker",
                error = ?"Network(Protocol(PayloadSizeLimitExceeded(20971535)))",
                "disconnected"
            );
            tracing::error!(target: "rumqttd::server::broker", error = ?"Io(ConnectionReset)", "disconnected");
        });
        assert_eq!(refused_payloads() - before, 1);
    }
}
