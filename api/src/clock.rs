//! Wall-clock time behind a trait, so that timestamps in status, Events and Leases come from the
//! simulation's clock there and from the system clock in production.

use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Wall time derived from tokio's clock: `start` plus the tokio time elapsed since creation. Under a
/// paused or simulated tokio runtime this is fully deterministic.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: Timestamp) -> Self {
        Self { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.origin.elapsed()).unwrap_or(SignedDuration::MAX);
        self.start.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

pub type SharedClock = Arc<dyn Clock>;
