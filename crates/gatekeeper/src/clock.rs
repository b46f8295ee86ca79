//! Clocks: the system clock, and a settable one for simulations and tests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use policy::Instant;

/// Where a gatekeeper reads the current instant.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Instant::from_nanos(nanos)
    }
}

/// A clock that says what it was last set to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock set to `at`.
    pub fn new(at: Instant) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at.as_nanos())))
    }

    /// Sets the time.
    pub fn set(&self, at: Instant) {
        self.0.store(at.as_nanos(), Ordering::SeqCst);
    }

    /// Moves the time forward (or back, with a negative amount).
    pub fn advance(&self, by: std::time::Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.load(Ordering::SeqCst))
    }
}
