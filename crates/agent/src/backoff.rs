//! Retries for the agent's watch loops that program the kernel (Service proxy,
//! NetworkPolicies): a failed sync is tried again after a delay even when no watch
//! event comes, 1 s at first, doubling to 30 s, back to none after a success.

use std::time::Duration;

use futures_util::{Stream, StreamExt};

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(30);

/// The delay before the next retry, when one is due.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// A sync failed: retry after the next delay.
    pub(crate) fn failed(&mut self) {
        self.next = Some(self.next.map_or(FIRST, |d| (d * 2).min(LONGEST)));
    }

    /// A sync succeeded: wait for events only.
    pub(crate) fn succeeded(&mut self) {
        self.next = None;
    }

    /// The next item of `events`, or `Some(None)` when a retry falls due first; None
    /// when the stream has ended.
    pub(crate) async fn next<S: Stream + Unpin>(&self, events: &mut S) -> Option<Option<S::Item>> {
        match self.next {
            None => events.next().await.map(Some),
            Some(d) => match tokio::time::timeout(d, events.next()).await {
                Ok(item) => item.map(Some),
                Err(_) => Some(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_brings_a_retry_with_growing_delays_until_a_success() {
        let mut quiet = futures_util::stream::pending::<u32>();
        let mut b = Backoff::default();
        // Nothing due: waiting on a quiet stream does not end.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), b.next(&mut quiet))
                .await
                .is_err()
        );
        let mut delays = Vec::new();
        for _ in 0..7 {
            b.failed();
            let start = tokio::time::Instant::now();
            assert_eq!(b.next(&mut quiet).await, Some(None));
            delays.push(start.elapsed().as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        // An event before the delay is handed over as it comes.
        let mut one = futures_util::stream::iter([7u32]);
        assert_eq!(b.next(&mut one).await, Some(Some(7)));
        assert_eq!(b.next(&mut one).await, None);
        b.succeeded();
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), b.next(&mut quiet))
                .await
                .is_err()
        );
    }
}
