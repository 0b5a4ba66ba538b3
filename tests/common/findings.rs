//! Rule violations collected over a run, so that one run reports every
//! broken rule instead of stopping at the first.

use std::sync::Mutex;

/// Collected rule violations, so that one run reports every broken rule
/// (each once, with a count and the first example) instead of stopping at
/// the first.
#[derive(Default)]
pub struct Findings {
    items: Mutex<std::collections::BTreeMap<String, (usize, String)>>,
    checks: std::sync::atomic::AtomicUsize,
}

impl Findings {
    pub fn check(&self, ok: bool, rule: &str, detail: impl FnOnce() -> String) {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !ok {
            let mut g = self.items.lock().unwrap();
            let e = g.entry(rule.to_string()).or_insert_with(|| (0, detail()));
            e.0 += 1;
        }
    }

    pub fn fail(&self, rule: &str, detail: String) {
        self.check(false, rule, || detail);
    }

    /// `what` happened after `took` (`None`: not within the wait), which
    /// must be at most `limit`; prints the time taken.
    pub fn check_within(
        &self,
        what: &str,
        took: Option<std::time::Duration>,
        limit: std::time::Duration,
        detail: impl FnOnce() -> String,
    ) {
        match took {
            Some(d) => {
                eprintln!("{what}: after {d:?}");
                self.check(d <= limit, &format!("{what} within {limit:?}"), || {
                    format!("{d:?}")
                });
            }
            None => self.fail(&format!("{what} at all"), detail()),
        }
    }

    /// The rules that failed.
    pub fn rules(&self) -> Vec<String> {
        self.items.lock().unwrap().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.lock().unwrap().is_empty()
    }

    pub fn report(&self) -> String {
        let g = self.items.lock().unwrap();
        let mut s = String::new();
        for (rule, (n, ex)) in g.iter() {
            s.push_str(&format!("- {rule} ({n}x)\n    first: {ex}\n"));
        }
        s
    }

    pub fn assert_empty(&self, what: &str) {
        let n = self.checks.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{what}: {n} checks evaluated");
        if !self.is_empty() {
            panic!("{what}: rules violated:\n{}", self.report());
        }
    }
}
