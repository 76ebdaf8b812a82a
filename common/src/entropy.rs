//! Random bytes for the programs (a writer token, a handle key, a write verifier): the operating
//! system's, unless the thread has a seeded source installed.
//!
//! Only the simulation installs one ([`seed_thread`]): every simulated host runs on the thread
//! that steps the simulation, so with the source seeded from the run's seed, the programs draw
//! the same bytes in the same order every run, and a seed replays the whole run. A production
//! binary never installs one; the hook is a thread-local that stays empty there.

use std::cell::RefCell;

thread_local! {
    static SEEDED: RefCell<Option<Seeded>> = const { RefCell::new(None) };
    /// A second stream from the same seed, for what the simulation takes from the C library's
    /// `getrandom` ([`fill_seeded_os`]): libraries draw from it a number of times the seed does
    /// not decide (a process-wide seed is drawn only by the first run of a process), which must
    /// not shift the programs' own bytes.
    static SEEDED_OS: RefCell<Option<Seeded>> = const { RefCell::new(None) };
}

/// A counter-mode stream: the hash of the seed and a block number, block after block. Not for
/// secrets; only the simulation uses it.
struct Seeded {
    seed: u64,
    block: u64,
    buffered: Vec<u8>,
    /// Bytes handed out (read for the second stream, see [`seeded_os_bytes_drawn`]).
    drawn: u64,
}

impl Seeded {
    fn fill(&mut self, out: &mut [u8]) {
        let mut written = 0;
        while written < out.len() {
            if self.buffered.is_empty() {
                let mut input = [0u8; 16];
                input[..8].copy_from_slice(&self.seed.to_le_bytes());
                input[8..].copy_from_slice(&self.block.to_le_bytes());
                self.block += 1;
                self.buffered = hash_block(&input).to_vec();
            }
            let take = self.buffered.len().min(out.len() - written);
            out[written..written + take].copy_from_slice(&self.buffered[..take]);
            self.buffered.drain(..take);
            written += take;
        }
    }
}

/// The next number of a SplitMix64 sequence: a fast, well-mixed stream from one word of state,
/// for choices that must follow from a seed (not for secrets).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 32 bytes from 16: SplitMix64 over the input's two words, four times (the simulation only
/// needs bytes that depend on the seed and do not repeat).
fn hash_block(input: &[u8; 16]) -> [u8; 32] {
    let word = |i: usize| u64::from_le_bytes(input[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let mut state = word(0) ^ word(1).rotate_left(32);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out
}

/// Fills `out` with random bytes: the thread's seeded source if one is installed, else the
/// operating system's.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    match draw(&SEEDED, out) {
        true => Ok(()),
        false => getrandom::fill(out),
    }
}

/// Fills `out` from this thread's second seeded stream (the one for the C library's `getrandom`,
/// which the simulation interposes) and says so, or leaves it and says there is none. Never
/// panics: it may be called at any point of a thread's life (while the source is borrowed, or
/// after it is gone).
pub fn fill_seeded_os(out: &mut [u8]) -> bool {
    draw(&SEEDED_OS, out)
}

fn draw(stream: &'static std::thread::LocalKey<RefCell<Option<Seeded>>>, out: &mut [u8]) -> bool {
    stream
        .try_with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else { return false };
            let Some(source) = slot.as_mut() else { return false };
            source.fill(out);
            source.drawn += out.len() as u64;
            true
        })
        .unwrap_or(false)
}

/// Bytes drawn from this thread's second seeded stream since it was installed (0 without one).
pub fn seeded_os_bytes_drawn() -> u64 {
    SEEDED_OS
        .try_with(|cell| cell.try_borrow().ok().and_then(|s| s.as_ref().map(|s| s.drawn)))
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Installs a source seeded with `seed` on this thread (replacing any before it). For the
/// simulation only.
pub fn seed_thread(seed: u64) {
    let stream = |seed| Some(Seeded { seed, block: 0, buffered: Vec::new(), drawn: 0 });
    SEEDED.with(|cell| *cell.borrow_mut() = stream(seed));
    // Another seed for the other stream, so that the two never hand out the same bytes.
    SEEDED_OS.with(|cell| *cell.borrow_mut() = stream(seed ^ 0x6f73_5f72_616e_646f));
}

/// Removes this thread's seeded source: the operating system's again.
pub fn unseed_thread() {
    SEEDED.with(|cell| *cell.borrow_mut() = None);
    SEEDED_OS.with(|cell| *cell.borrow_mut() = None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        fill(&mut bytes).expect("random bytes");
        bytes
    }

    #[test]
    fn a_seeded_thread_draws_the_same_bytes_and_an_unseeded_one_the_systems() {
        seed_thread(7);
        let first = (draw(16), draw(40));
        seed_thread(7);
        assert_eq!((draw(16), draw(40)), first, "the same seed, the same bytes");
        seed_thread(8);
        assert_ne!(draw(16), first.0, "another seed, other bytes");
        assert_ne!(first.0[..8], first.1[..8], "no repeats within a stream");
        unseed_thread();
        assert_ne!(draw(32), draw(32), "the system's");
    }
}
