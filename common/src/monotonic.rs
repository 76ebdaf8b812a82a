//! A monotonic clock for what a program remembers and compares later (how old a cache entry is):
//! the operating system's, unless the thread has a source of its own installed.
//!
//! Only the simulation installs one ([`install_thread_source`]). There every host has a tokio
//! runtime of its own, with a paused clock whose origin is the moment the runtime was made, in
//! wall time; so a `tokio::time::Instant` taken under one host's runtime and compared under
//! another's (the syncer calls its NFS server in-process), or under the same host after a restart
//! (a new runtime), measures wall time between the runtimes' creations, which the machine's load
//! decides. The simulation's source is its own elapsed time, one timeline for every host.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

type Source = Rc<dyn Fn() -> Option<Duration>>;

thread_local! {
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

/// A point in time on this clock: comparable with another only on the same process (production)
/// or the same simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonotonicInstant(Duration);

impl MonotonicInstant {
    /// Now.
    pub fn now() -> Self {
        let source = SOURCE.with(|cell| cell.borrow().clone());
        let installed = source.and_then(|source| source());
        Self(installed.unwrap_or_else(since_process_origin))
    }

    /// The time since `self`, zero if `self` is later.
    pub fn elapsed(self) -> Duration {
        Self::now().0.saturating_sub(self.0)
    }
}

fn since_process_origin() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// Installs `source` as this thread's clock (replacing any before it); where it answers None, the
/// operating system's clock is read. For the simulation only.
pub fn install_thread_source(source: impl Fn() -> Option<Duration> + 'static) {
    SOURCE.with(|cell| *cell.borrow_mut() = Some(Rc::new(source)));
}

/// Removes this thread's source: the operating system's clock again.
pub fn uninstall_thread_source() {
    SOURCE.with(|cell| *cell.borrow_mut() = None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_source_decides_on_its_thread_only() {
        std::thread::spawn(|| {
            install_thread_source(|| Some(Duration::from_secs(100)));
            let then = MonotonicInstant::now();
            assert_eq!(then.elapsed(), Duration::ZERO);
            install_thread_source(|| Some(Duration::from_secs(107)));
            assert_eq!(then.elapsed(), Duration::from_secs(7));
            let other = std::thread::spawn(MonotonicInstant::now).join().expect("the thread");
            assert!(other < MonotonicInstant(Duration::from_secs(100)), "another thread reads the system clock");
            uninstall_thread_source();
            assert!(MonotonicInstant::now() < then);
        })
        .join()
        .expect("the thread");
    }

    #[test]
    fn a_source_without_an_answer_falls_back_to_the_system_clock() {
        std::thread::spawn(|| {
            install_thread_source(|| None);
            let a = MonotonicInstant::now();
            let b = MonotonicInstant::now();
            assert!(b >= a);
            assert!(a.0 < Duration::from_secs(3600), "the process clock starts with the process");
        })
        .join()
        .expect("the thread");
    }
}
