//! Log lines a peer can trigger at will, kept to a budget: a refused
//! connection or a misbehaving stream logs its first lines, then one line per
//! window saying how many were held back. A script that opens thousands of
//! bad connections fills no disk.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One log site's budget: at most `burst` lines per `window`.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    held: u64,
}

impl LogBudget {
    pub const fn new(burst: u32, window: Duration) -> Self {
        LogBudget {
            burst,
            window,
            state: Mutex::new(Window {
                started: None,
                written: 0,
                held: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` with the number of
    /// lines held back since the last one written (say so in the line), or
    /// `None` to stay silent.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-count.
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            w.started = Some(now);
            w.written = 0;
        }
        if w.written >= self.burst {
            w.held += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.held))
    }

    /// [`LogBudget::admit`] at the current time.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_the_burst_then_one_line_per_window_with_the_count_held() {
        let budget = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let written: Vec<Option<u64>> = (0..1000).map(|_| budget.admit(t0)).collect();
        assert_eq!(written.iter().flatten().count(), 3);
        assert_eq!(written[..3], [Some(0), Some(0), Some(0)]);
        assert_eq!(budget.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(budget.admit(t0 + Duration::from_secs(10)), Some(998));
        assert_eq!(budget.admit(t0 + Duration::from_secs(11)), Some(0));
    }
}
