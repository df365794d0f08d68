//! The clock that cache freshness is measured against.
//!
//! Network deadlines use tokio's timers; cache ages use this clock, so tests can move time
//! forward by exact amounts without sleeping and without pausing the runtime that drives real
//! sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Source of "now" for the cache.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The monotonic system clock.
    #[default]
    System,
    /// A frozen clock that only moves when told to (tests).
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    /// A manual clock frozen at the current instant.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(Mutex::new(Instant::now())))
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(at) => *at.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(at) = self {
            *at.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }
}
