//! A per-tenant budget for log lines a client or guest can trigger (connects, resets, link
//! changes): a tenant looping on them must not flood the node's log or disk. The first
//! [`PER_WINDOW`] events of each [`WINDOW`] are logged; the rest are counted, and the count
//! rides along with the next line that is logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per window and tenant.
pub const PER_WINDOW: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// One tenant's log budget.
#[derive(Debug, Default)]
pub struct LogBudget {
    w: Mutex<Window>,
}

impl LogBudget {
    pub fn new() -> LogBudget {
        LogBudget::default()
    }

    /// `Some(n)` when this event may be logged (`n` events were suppressed since the last
    /// logged one: put it in the line), `None` when it is over budget (counted).
    pub fn take(&self) -> Option<u64> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used < PER_WINDOW {
            w.used += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_the_count_reported_later() {
        let b = LogBudget::new();
        let t0 = Instant::now();
        for _ in 0..PER_WINDOW {
            assert_eq!(b.take_at(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(b.take_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(b.take_at(t0 + WINDOW), Some(1000));
        assert_eq!(b.take_at(t0 + WINDOW), Some(0));
    }
}
