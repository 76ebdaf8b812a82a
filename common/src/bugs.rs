//! Known bugs that a test switches on, one at a time, to show that the simulation's oracles catch
//! them: exploration must find each and shrink it (see `sim/src/explore.rs` and
//! `sim/tests/known_bugs.rs`). Each is a stand-in for a class of real defect, placed where such a
//! defect would sit.
//!
//! Only a build with this crate's `inject-bugs` feature can switch one on ([`inject`]); only
//! sv-sim's tests enable it. Everywhere else [`active`] is a constant `false` and the programs'
//! checks of it compile away. The switch is per thread (the simulation runs every program on the
//! thread of its world), so tests running side by side do not see each other's bug.

/// A known bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The operator forgets the claims it made in consumer namespaces when a volume is deleted.
    ForgetConsumerClaim,
    /// After the operator restarts, a volume's NFS address changes.
    NfsAddressChangesAfterRestart,
    /// The syncer publishes a revision before its last file is written.
    PublishIncompleteTree,
    /// The webhook mounts a ClusterSharedVolume in a namespace its selector does not allow.
    MountOutsideNamespaces,
    /// A failed sync's message carries the source's password (the syncer forgets to redact).
    SecretInCondition,
    /// `sv-nfs` acknowledges a FILE_SYNC (or DATA_SYNC) write without syncing it.
    AckUnsyncedWrite,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::ForgetConsumerClaim,
        Bug::NfsAddressChangesAfterRestart,
        Bug::PublishIncompleteTree,
        Bug::MountOutsideNamespaces,
        Bug::SecretInCondition,
        Bug::AckUnsyncedWrite,
    ];
}

#[cfg(feature = "inject-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
    static OPERATOR_STARTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether `bug` is switched on for this thread.
#[inline]
pub fn active(bug: Bug) -> bool {
    #[cfg(feature = "inject-bugs")]
    {
        ACTIVE.with(|active| active.get() == Some(bug))
    }
    #[cfg(not(feature = "inject-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Switches `bug` on for this thread (`None`: every bug off), and starts counting operator starts
/// afresh.
#[cfg(feature = "inject-bugs")]
pub fn inject(bug: Option<Bug>) {
    ACTIVE.with(|active| active.set(bug));
    OPERATOR_STARTS.with(|starts| starts.set(0));
}

/// What this thread has switched on, to hand to a thread that runs a world for it
/// ([`Inherited::install`]).
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(feature = "inject-bugs"), allow(dead_code))]
pub struct Inherited(Option<Bug>);

impl Inherited {
    pub fn current() -> Self {
        #[cfg(feature = "inject-bugs")]
        {
            Self(ACTIVE.with(std::cell::Cell::get))
        }
        #[cfg(not(feature = "inject-bugs"))]
        {
            Self(None)
        }
    }

    /// On the new thread: the same bug on, operator starts counted from zero.
    pub fn install(self) {
        #[cfg(feature = "inject-bugs")]
        inject(self.0);
    }
}

/// Counts a start of the operator on this thread; returns how many there have been (the first
/// is 1). Only [`Bug::NfsAddressChangesAfterRestart`] reads it.
pub fn operator_started() -> u32 {
    #[cfg(feature = "inject-bugs")]
    {
        OPERATOR_STARTS.with(|starts| {
            starts.set(starts.get() + 1);
            starts.get()
        })
    }
    #[cfg(not(feature = "inject-bugs"))]
    {
        1
    }
}

/// How many times the operator started on this thread.
pub fn operator_starts() -> u32 {
    #[cfg(feature = "inject-bugs")]
    {
        OPERATOR_STARTS.with(std::cell::Cell::get)
    }
    #[cfg(not(feature = "inject-bugs"))]
    {
        1
    }
}
