//! When to sync: a pure function of what happened so far, so it is tested without waiting and
//! replays in the simulation.
//!
//! - the first sync starts at once (also after a restart: the syncer may have died mid-sync);
//! - later ones start every `syncInterval` after the previous start;
//! - a failure is retried after 5 s, doubling, never later than the interval;
//! - a new value of the sync-requested annotation, or a changed source, starts one at once.

use std::time::Duration;

use tokio::time::Instant;

/// First retry delay after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// Why a sync starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    First,
    Interval,
    Retry,
    Requested,
    SourceChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::First => "first",
            Reason::Interval => "interval",
            Reason::Retry => "retry",
            Reason::Requested => "requested",
            Reason::SourceChanged => "source-changed",
        }
    }
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Now(Reason),
    At(Instant),
}

/// The inputs that can demand a sync, as of now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub interval: Duration,
    /// Digest of the spec's source.
    pub source: &'a str,
    /// Value of the sync-requested annotation.
    pub trigger: Option<&'a str>,
}

#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    last_start: Option<Instant>,
    failures: u32,
    source: Option<String>,
    trigger: Option<String>,
}

impl Scheduler {
    /// A scheduler that already honoured `trigger` (the annotation's value at startup, so an old
    /// request is not replayed by every restart).
    pub fn new(trigger: Option<&str>) -> Self {
        Self { trigger: trigger.map(str::to_string), ..Self::default() }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Delay before retrying after `failures` consecutive failures.
    pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        FIRST_RETRY.saturating_mul(1 << exp).min(interval)
    }

    pub fn next(&self, now: Instant, wanted: &Wanted<'_>) -> Due {
        let Some(last) = self.last_start else {
            return Due::Now(Reason::First);
        };
        if wanted.trigger.is_some() && wanted.trigger != self.trigger.as_deref() {
            return Due::Now(Reason::Requested);
        }
        if self.source.as_deref() != Some(wanted.source) {
            return Due::Now(Reason::SourceChanged);
        }
        let (wait, reason) = if self.failures > 0 {
            (Self::retry_delay(self.failures, wanted.interval), Reason::Retry)
        } else {
            (wanted.interval, Reason::Interval)
        };
        let at = last + wait;
        if now >= at { Due::Now(reason) } else { Due::At(at) }
    }

    /// Records a sync that started at `started` for `wanted`, and whether it succeeded.
    pub fn record(&mut self, started: Instant, wanted: &Wanted<'_>, succeeded: bool) {
        self.last_start = Some(started);
        self.source = Some(wanted.source.to_string());
        if wanted.trigger.is_some() {
            self.trigger = wanted.trigger.map(str::to_string);
        }
        self.failures = if succeeded { 0 } else { self.failures.saturating_add(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn wanted<'a>(source: &'a str, trigger: Option<&'a str>) -> Wanted<'a> {
        Wanted { interval: MIN, source, trigger }
    }

    #[tokio::test(start_paused = true)]
    async fn first_sync_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(None);
        assert_eq!(s.next(t0, &wanted("a", None)), Due::Now(Reason::First));
        s.record(t0, &wanted("a", None), true);
        assert_eq!(s.next(t0 + Duration::from_secs(10), &wanted("a", None)), Due::At(t0 + MIN));
        assert_eq!(s.next(t0 + MIN, &wanted("a", None)), Due::Now(Reason::Interval));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_up_to_the_interval() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(None);
        let mut delays = Vec::new();
        for _ in 0..6 {
            s.record(t0, &wanted("a", None), false);
            match s.next(t0, &wanted("a", None)) {
                Due::At(at) => delays.push((at - t0).as_secs()),
                Due::Now(r) => panic!("{r:?}"),
            }
        }
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
        s.record(t0, &wanted("a", None), true);
        assert_eq!(s.failures(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_and_source_changes_start_a_sync_at_once() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Some("old"));
        s.record(t0, &wanted("a", Some("old")), true);
        assert!(matches!(s.next(t0, &wanted("a", Some("old"))), Due::At(_)), "an old request is not replayed");
        assert_eq!(s.next(t0, &wanted("a", Some("new"))), Due::Now(Reason::Requested));
        s.record(t0, &wanted("a", Some("new")), true);
        assert!(matches!(s.next(t0, &wanted("a", Some("new"))), Due::At(_)));
        assert_eq!(s.next(t0, &wanted("b", Some("new"))), Due::Now(Reason::SourceChanged));
    }
}
