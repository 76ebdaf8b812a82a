//! The parts the main job's summary and a scenario's report share: how often each invariant was
//! checked, and the closing line with the times, the trace hash and how to replay.

use std::fmt;
use std::time::Duration;

/// One line per invariant with how many times it was checked; one that had nothing to look at
/// says so instead of showing a count of 0.
pub fn write_invariants(f: &mut fmt::Formatter<'_>, counts: &[(String, u64)]) -> fmt::Result {
    for (invariant, checks) in counts {
        match checks {
            0 => writeln!(f, "  {:>8}  {invariant}: nothing to check in this run", "-")?,
            n => writeln!(f, "  {n:>8}  {invariant}")?,
        }
    }
    Ok(())
}

/// The last line: simulated and wall time, the trace hash, and the seed that replays the run.
pub fn write_closing_line(
    f: &mut fmt::Formatter<'_>,
    simulated: Duration,
    wall: Duration,
    trace_hash: &str,
    seed: u64,
    replayable: bool,
) -> fmt::Result {
    let rate = simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    // A thread that made a HashMap before its world keeps the kernel's keys: say so rather than
    // promise a replay the hash may not keep.
    let caveat = match replayable {
        true => "",
        false => " (HashMap order was not from the seed in this process: another run may differ)",
    };
    writeln!(
        f,
        "Simulated {:.1} s in {:.2} s of wall time ({rate:.1}x); trace hash {trace_hash}{caveat}; replay with --seed {seed}.",
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
    )
}
