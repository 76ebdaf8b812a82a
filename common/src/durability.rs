//! What a program has made durable, for a simulation that models a node losing its page cache.
//!
//! On a real node, a write that was not synced (`fsync`, `fdatasync`) is lost when the node
//! loses power; the process surviving is not enough. `sv-nfs` tells a journal, when one is
//! installed on its thread, before it writes a file without syncing it and after it has synced
//! one; the simulation installs a journal that keeps a copy of the file as it was before its
//! first unsynced write and puts it back when the node is lost. The same journal says whether the
//! disk under a file has room for it to grow, so that the simulation can fill a disk (a write
//! then fails with `ENOSPC`). Production installs none: each call is then one thread-local read.

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

/// Receives what a program writes without syncing, and what it syncs.
pub trait Journal {
    /// `file` is about to be written and not synced.
    fn before_unsynced_write(&self, file: BorrowedFd<'_>);
    /// Everything written to `file` so far is durable.
    fn synced(&self, file: BorrowedFd<'_>);
    /// Whether the disk under `file` has room for it to grow by `bytes`; `false` makes the write
    /// fail with `ENOSPC`, as a full disk's does (the simulation's full disks).
    fn has_room(&self, _file: BorrowedFd<'_>, _bytes: u64) -> bool {
        true
    }
}

thread_local! {
    static JOURNAL: RefCell<Option<Rc<dyn Journal>>> = const { RefCell::new(None) };
}

/// Installs `journal` for this thread (`None` removes it).
pub fn install(journal: Option<Rc<dyn Journal>>) {
    JOURNAL.with(|j| *j.borrow_mut() = journal);
}

/// Runs `work` with the journal `make` gives installed on this thread, unless this thread has
/// one already: for a thread that makes calls into a program of another thread (the simulation's
/// syncer calling its NFS server in-process from a blocking thread).
pub fn with_journal<T>(make: impl FnOnce() -> Rc<dyn Journal>, work: impl FnOnce() -> T) -> T {
    if JOURNAL.with(|j| j.borrow().is_some()) {
        return work();
    }
    install(Some(make()));
    let result = work();
    install(None);
    result
}

/// See [`Journal::before_unsynced_write`].
pub fn before_unsynced_write(file: BorrowedFd<'_>) {
    if let Some(journal) = JOURNAL.with(|j| j.borrow().clone()) {
        journal.before_unsynced_write(file);
    }
}

/// See [`Journal::synced`].
pub fn synced(file: BorrowedFd<'_>) {
    if let Some(journal) = JOURNAL.with(|j| j.borrow().clone()) {
        journal.synced(file);
    }
}

/// See [`Journal::has_room`]; with no journal installed, the disk decides (the write itself).
pub fn has_room(file: BorrowedFd<'_>, bytes: u64) -> bool {
    JOURNAL.with(|j| j.borrow().clone()).is_none_or(|journal| journal.has_room(file, bytes))
}
