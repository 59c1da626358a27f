//! Wall-clock time, injectable.
//!
//! The status cache compares timestamps written by other processes, so it
//! needs wall-clock time ([`SystemTime`]), not a monotonic clock. Tests use
//! [`ManualClock`] to move time forward past a cache lifetime without
//! sleeping.
//!
//! This module does not schedule anything; timeouts use tokio's timer.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// A clock standing at `secs` seconds after the Unix epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    /// Sets the clock to `to` (which may be in the past).
    pub fn set(&self, to: SystemTime) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // The guarded value is a plain timestamp: a panic elsewhere cannot
        // leave it half-written.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

/// Milliseconds since the Unix epoch; times before the epoch count as 0.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The inverse of [`unix_ms`].
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at_unix_secs(1_000);
        assert_eq!(unix_ms(c.now()), 1_000_000);
        c.advance(Duration::from_millis(1_500));
        assert_eq!(unix_ms(c.now()), 1_001_500);
        c.set(UNIX_EPOCH);
        assert_eq!(unix_ms(c.now()), 0);
        assert_eq!(from_unix_ms(42), UNIX_EPOCH + Duration::from_millis(42));
    }
}
