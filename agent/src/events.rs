//! Agent-side events (faults, result files) appended straight to the outbox
//! with the clock's time. Faults are deduplicated per source: a meter that
//! stays unreachable is one fault when it starts failing, not one a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use labhours_shared::wire::{EventKind, ResultFile};

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::results::{Fingerprint, ResultSink};

#[derive(Clone)]
pub struct Events {
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    /// The message of each source's current fault.
    active: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub fn new(outbox: Outbox, clock: Arc<dyn Clock>) -> Self {
        Self {
            outbox,
            clock,
            active: Arc::default(),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Appends a fault event.
    pub fn fault(&self, source: &str, message: &str) {
        tracing::warn!(source, message, "fault");
        let kind = EventKind::Fault {
            source: source.into(),
            message: message.into(),
        };
        if let Err(e) = self.outbox.append(self.clock.now(), vec![kind]) {
            tracing::error!(error = %e, source, message, "cannot record a fault in the outbox");
        }
    }

    /// Appends a fault unless `source` already has this very fault open.
    pub fn fault_once(&self, source: &str, message: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.get(source).is_some_and(|m| m == message) {
            return;
        }
        active.insert(source.into(), message.into());
        drop(active);
        self.fault(source, message);
    }

    /// `source` works again: its next fault is reported anew.
    pub fn clear(&self, source: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.remove(source).is_some() {
            tracing::info!(source, "recovered");
        }
    }
}

impl ResultSink for Events {
    fn reported(&self, key: &str) -> anyhow::Result<Option<Fingerprint>> {
        Ok(self.outbox.file_reported(key)?)
    }

    fn report(&self, key: &str, fingerprint: Fingerprint, event: ResultFile) -> anyhow::Result<()> {
        self.outbox
            .append_result_file(self.clock.now(), key, fingerprint, event)?;
        Ok(())
    }

    fn fault(&self, source: &str, message: &str) -> anyhow::Result<()> {
        Events::fault(self, source, message);
        Ok(())
    }
}
