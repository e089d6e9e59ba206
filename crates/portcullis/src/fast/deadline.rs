//! Deadlines for the reads of one connection, one timer reused for all of them.
//!
//! A tokio `timeout` per read registers a timer in the runtime's wheel and removes it again,
//! under the driver's lock, for every request. A reused `Sleep` whose deadline only moves
//! later is extended in place (tokio checks the new deadline when the old one comes due), so
//! a kept-alive connection's reads cost the wheel almost nothing. The client side and the
//! upstream side each keep their own, as each side's deadlines only move forward.
//!
//! Deadlines are tokio instants: a test on tokio's paused clock moves them with
//! `tokio::time::advance` (`fast/tests.rs`).

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// One reusable timer.
#[derive(Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Runs `work` until `at`: its output, or `None` when the time ran out first.
    pub async fn run<F: Future>(&mut self, at: Instant, work: F) -> Option<F::Output> {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                sleep.as_mut().reset(at);
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        tokio::select! {
            biased;
            out = work => Some(out),
            () = sleep.as_mut() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reused_deadline_fires_only_for_the_work_it_guards() {
        let mut deadline = Deadline::default();
        let soon = || Instant::now() + Duration::from_secs(1);
        // Quick work, again and again: every deadline moves later, none fires.
        for _ in 0..3 {
            assert_eq!(deadline.run(soon(), async { 7 }).await, Some(7));
            tokio::time::advance(Duration::from_millis(600)).await;
        }
        // Work slower than its deadline.
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(deadline.run(soon(), slow).await, None);
        // And the fired timer serves the next read again.
        assert_eq!(deadline.run(soon(), async { 8 }).await, Some(8));
    }
}
