//! A crashed host's connections close in an order the run decides, not the order tokio drops
//! its tasks in.
//!
//! When turmoil crashes or restarts a host it drops the host's tokio runtime, and with it every
//! task, in the order of tokio's task lists: sharded by task id, and task ids come from one
//! counter for the whole process. Each TCP stream a dropped task held sends its FIN or RST then,
//! and the order of those sends decides which peer draws which message latency and which
//! connection its host hears about first. So a world run after other worlds in the same process
//! (more tasks spawned before it) replayed differently after the first API server restart.
//!
//! Instead, every stream the simulation opens or accepts is a [`crate::net::SimStream`] with a
//! number in the order it was opened. While a host is torn down ([`World::crash`] and
//! [`World::bounce`] wrap turmoil's restart in [`tearing_down`]) a stream being dropped is kept
//! here rather than closed; the host's software, which turmoil calls next on the same host
//! ([`host_software`]), first closes the kept streams in the order they were opened, so their
//! FINs leave from the right host. A host that is only crashed restarts into software that does
//! nothing, until a later restart runs its program again.
//!
//! [`World::crash`]: crate::world::World::crash
//! [`World::bounce`]: crate::world::World::bounce

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

thread_local! {
    static TEARING_DOWN: Cell<bool> = const { Cell::new(false) };
    static NEXT_STREAM: Cell<u64> = const { Cell::new(0) };
    static KEPT: RefCell<Vec<(u64, turmoil::net::TcpStream)>> = const { RefCell::new(Vec::new()) };
}

/// Starts a world's numbering again (every world runs on a thread of its own or after the last).
pub fn reset() {
    NEXT_STREAM.with(|n| n.set(0));
    TEARING_DOWN.with(|t| t.set(false));
    KEPT.with(|kept| kept.borrow_mut().clear());
}

/// The number of a stream opened or accepted now.
pub(crate) fn next_stream_number() -> u64 {
    NEXT_STREAM.with(|n| {
        let number = n.get();
        n.set(number + 1);
        number
    })
}

/// Keeps `stream` to be closed with the rest of its host's streams, if its host is being torn
/// down; otherwise gives it back to be dropped at once.
pub(crate) fn keep_if_tearing_down(number: u64, stream: turmoil::net::TcpStream) -> Option<turmoil::net::TcpStream> {
    if TEARING_DOWN.with(Cell::get) {
        KEPT.with(|kept| kept.borrow_mut().push((number, stream)));
        None
    } else {
        Some(stream)
    }
}

/// Runs `restart` (turmoil's crash or restart of one host) with streams kept rather than closed,
/// then closes any the host's software did not (a host whose software is not wrapped by
/// [`host_software`]; outside a host, so without a FIN).
pub fn tearing_down<R>(restart: impl FnOnce() -> R) -> R {
    TEARING_DOWN.with(|t| t.set(true));
    let result = restart();
    close_kept();
    result
}

/// Closes the kept streams, oldest first, on the current host.
fn close_kept() {
    TEARING_DOWN.with(|t| t.set(false));
    let mut kept = KEPT.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
    kept.sort_by_key(|(number, _)| *number);
    for (_, stream) in kept {
        drop(stream);
    }
}

/// The hosts that are down: their software does nothing until they are restarted.
pub type DownHosts = Rc<RefCell<BTreeSet<String>>>;

type Software = Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// `software` as turmoil runs it on host `name`: it first closes what the host's last run left
/// open, in order, and does nothing while the host is down.
pub fn host_software<F, Fut>(name: &str, down: DownHosts, software: F) -> impl Fn() -> Software + 'static
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = turmoil::Result> + 'static,
{
    let name = name.to_string();
    move || {
        close_kept();
        if down.borrow().contains(&name) { Box::pin(std::future::pending()) } else { Box::pin(software()) }
    }
}
