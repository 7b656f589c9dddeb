//! What `/healthz` and `/readyz` answer from: three flags the consumer sets and the
//! endpoint reads, lock-free, from its own thread.
//!
//! `/healthz` is 200 while the process serves at all. `/readyz` is 200 only while connected
//! and consuming and not shutting down. A pause for memory is not unreadiness (docs/metrics.md): it
//! is `logfence_consumer_paused`, because a sidecar that turned unready whenever it paused
//! would take its application pod out of the Service for a transient condition.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    consuming: AtomicBool,
    shutting_down: AtomicBool,
}

/// Why `/readyz` says no, or that it says yes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    ShuttingDown,
    Disconnected,
    NotConsuming,
}

impl Readiness {
    pub fn is_ready(self) -> bool {
        self == Readiness::Ready
    }

    /// The response body: one word a human or a probe log can read.
    pub fn text(self) -> &'static str {
        match self {
            Readiness::Ready => "ready\n",
            Readiness::ShuttingDown => "shutting down\n",
            Readiness::Disconnected => "disconnected from the broker\n",
            Readiness::NotConsuming => "connected, not consuming yet\n",
        }
    }
}

static HEALTH: Health = Health {
    connected: AtomicBool::new(false),
    consuming: AtomicBool::new(false),
    shutting_down: AtomicBool::new(false),
};

/// The process-wide state (one consumer per process).
pub fn health() -> &'static Health {
    &HEALTH
}

impl Health {
    /// Connected (or not) to the broker; a lost connection is also no longer consuming.
    pub fn set_connected(&self, yes: bool) {
        self.connected.store(yes, Ordering::Release);
        if !yes {
            self.consuming.store(false, Ordering::Release);
        }
        super::metrics().connected(yes);
    }

    /// The broker accepted our `basic.consume` (or the consumer stopped).
    pub fn set_consuming(&self, yes: bool) {
        self.consuming.store(yes, Ordering::Release);
    }

    /// Shutdown began: unready from now on, for good.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn readiness(&self) -> Readiness {
        if self.shutting_down.load(Ordering::Acquire) {
            Readiness::ShuttingDown
        } else if !self.connected.load(Ordering::Acquire) {
            Readiness::Disconnected
        } else if !self.consuming.load(Ordering::Acquire) {
            Readiness::NotConsuming
        } else {
            Readiness::Ready
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_consuming_and_not_shutting_down() {
        let h = Health::default();
        assert_eq!(h.readiness(), Readiness::Disconnected);
        h.connected.store(true, Ordering::Release);
        assert_eq!(h.readiness(), Readiness::NotConsuming);
        h.set_consuming(true);
        assert!(h.readiness().is_ready());
        h.set_shutting_down();
        assert_eq!(h.readiness(), Readiness::ShuttingDown);
    }

    #[test]
    fn losing_the_connection_stops_consuming() {
        let h = Health::default();
        h.set_connected(true);
        h.set_consuming(true);
        h.set_connected(false);
        h.set_connected(true);
        assert_eq!(h.readiness(), Readiness::NotConsuming);
    }
}
