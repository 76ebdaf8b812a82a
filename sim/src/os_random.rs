//! The operating system's random bytes come from the seed on a world's thread.
//!
//! Code the simulation runs draws randomness the seed does not reach through
//! [`sv_common::entropy`]: the keys of std's `HashMap`s (kube-runtime's scheduler and reflector
//! iterate them, so their order decides which reconcile runs first), `ahash` and `rand`'s OS
//! source. All of them end in the C library's `getrandom`, which this module defines for any
//! binary that links `sv-sim` (the simulation's tests and the `sv-sim` program, never the
//! production programs): on a thread where [`sv_common::entropy::seed_thread`] installed the
//! seeded sources (every world's thread), the bytes come from the second of them (so that how
//! often libraries draw does not shift the programs' own bytes); anywhere else from the kernel,
//! as before. Per thread rather than per process, so that tests running in parallel each replay
//! their own seed. `getentropy` is defined over it. (madsim's `getrandom` override showed the way;
//! std looks the symbol up weakly so that it can be interposed.)
//!
//! ahash (kube-runtime's object caches) makes each map's keys from process-wide keys, drawn once
//! through `getrandom`, and a per-map number from its source, which by default adds up addresses
//! (different in every process): [`seed_ahash_keys`] gives it a source that draws from a stream
//! of the world's seed on a world's thread ([`seed_ahash_stream`]). foldhash (hashbrown's default, kube-runtime's scheduler) mixes addresses
//! and the time into its keys with no way in; the scheduler only looks entries up, never iterates.
//!
//! std draws a thread's `HashMap` keys once, when the thread makes its first one: a world seeds
//! them only on a thread that made none before it ([`seed_std_hash_keys`]); `sv-sim run` and the
//! determinism checks run each world on a new thread. What it does not reach: crates that make the
//! system call themselves (`ring`, `aws-lc`: TLS key shares and nonces, which change ciphertext,
//! not what happens), and the clocks.

use std::ffi::{c_int, c_uint, c_void};

/// The C library's `getrandom(2)` wrapper, seeded on a world's thread.
///
/// # Safety
/// `buffer` must be valid for writes of `length` bytes, as for the C function.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn getrandom(buffer: *mut c_void, length: usize, flags: c_uint) -> isize {
    if length == 0 {
        return 0;
    }
    // SAFETY: the caller gives a buffer of `length` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), length) };
    if sv_common::entropy::fill_seeded_os(out) {
        return length as isize;
    }
    // SAFETY: the system call with the caller's arguments, as the C library would make it.
    unsafe { libc::syscall(libc::SYS_getrandom, buffer, length, flags) as isize }
}

/// The C library's `getentropy(3)`, over [`getrandom`].
///
/// # Safety
/// `buffer` must be valid for writes of `length` bytes, as for the C function.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn getentropy(buffer: *mut c_void, length: usize) -> c_int {
    if length > 256 {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::EIO };
        return -1;
    }
    let mut filled = 0;
    while filled < length {
        // SAFETY: the rest of the caller's buffer.
        let got = unsafe { getrandom(buffer.cast::<u8>().add(filled).cast(), length - filled, 0) };
        match got {
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return -1,
        }
    }
    0
}

/// Draws this thread's std `HashMap` keys from its seeded source, if the thread has not drawn them
/// yet; says whether it did (false: the keys are the kernel's, and `HashMap` order is not
/// replayable on this thread).
pub fn seed_std_hash_keys() -> bool {
    // Keeps the definitions above in the binary even where nothing calls them by name.
    let mut probe = [0u8; 1];
    // SAFETY: a one-byte buffer.
    unsafe { getentropy(probe.as_mut_ptr().cast(), 0) };
    let before = sv_common::entropy::seeded_os_bytes_drawn();
    let _ = std::collections::hash_map::RandomState::new();
    sv_common::entropy::seeded_os_bytes_drawn() > before
}

thread_local! {
    /// The state of this thread's stream of ahash per-map keys, once a world seeded it.
    static AHASH_KEYS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Starts this thread's stream of ahash per-map keys from `seed` (a world's, at its start).
///
/// A stream of its own: drawn from the stream the interposed `getrandom` serves, the keys moved
/// with whatever libraries had drawn there, and a library that draws once per process (at its
/// first use) drew only in the first world of a process, so later worlds in the same process
/// listed their caches in another order.
pub fn seed_ahash_stream(seed: u64) {
    AHASH_KEYS.with(|keys| keys.set(Some(seed ^ 0x6168_6173_685f_6b73)));
}

/// ahash's source of per-map keys: the world's stream on a world's thread; elsewhere a counter
/// moved by an address, as ahash's own source does.
struct SeededAhashKeys {
    elsewhere: std::sync::atomic::AtomicUsize,
}

impl ahash::random_state::RandomSource for SeededAhashKeys {
    fn gen_hasher_seed(&self) -> usize {
        let seeded = AHASH_KEYS.with(|keys| {
            let mut state = keys.get()?;
            let key = sv_common::entropy::splitmix64(&mut state);
            keys.set(Some(state));
            Some(key as usize)
        });
        seeded.unwrap_or_else(|| {
            self.elsewhere.fetch_add(std::ptr::from_ref(self) as usize, std::sync::atomic::Ordering::Relaxed)
        })
    }
}

/// Makes the keys of ahash maps made on a seeded thread come from its seed; says whether they do
/// (not when a map was made in this process before the first call: ahash takes its source once).
pub fn seed_ahash_keys() -> bool {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        let source = SeededAhashKeys { elsewhere: std::sync::atomic::AtomicUsize::new(0x243f_6a88) };
        // Err(true): another source than ahash's own was set first, which is not ours either.
        let ours = ahash::random_state::set_random_source(source).is_ok();
        // ahash's process-wide keys, drawn once: from a constant seed, on a thread of their own,
        // so that they are the same in every process and take nothing from a world's stream.
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    sv_common::entropy::seed_thread(0);
                    let _ = ahash::RandomState::new();
                })
                .join()
        });
        ours
    })
}

/// The webhook's certificate keys in the simulation: ECDSA P-256 (as in production) from the
/// thread's seeded source, signing with RFC 6979's deterministic nonces, so that the certificates
/// it stores are the same bytes in every run of a seed. ring's keys and signatures draw from the
/// kernel with a system call of their own, which the `getrandom` above cannot reach.
struct SeededKeys;

struct SeededKey {
    key: p256::ecdsa::SigningKey,
    /// The public key as an uncompressed SEC1 point, as rcgen wants it.
    public: Vec<u8>,
}

impl SeededKey {
    fn new(key: p256::ecdsa::SigningKey) -> Self {
        let public = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        Self { key, public }
    }
}

impl rcgen::PublicKeyData for SeededKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for SeededKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use p256::ecdsa::signature::Signer as _;
        let signature: p256::ecdsa::Signature = self.key.try_sign(message).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

impl sv_webhook::certs::CertKey for SeededKey {
    fn pem(&self) -> String {
        use p256::pkcs8::EncodePrivateKey as _;
        self.key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).map(|pem| pem.to_string()).unwrap_or_default()
    }
}

impl sv_webhook::certs::KeyMaker for SeededKeys {
    fn generate(&self) -> Result<Box<dyn sv_webhook::certs::CertKey>, sv_webhook::certs::CertError> {
        // A scalar out of range (about one draw in 2^32) is drawn again.
        for _ in 0..64 {
            let mut bytes = [0u8; 32];
            sv_common::entropy::fill(&mut bytes)
                .map_err(|e| sv_webhook::certs::CertError::Key(format!("random bytes: {e}")))?;
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return Ok(Box::new(SeededKey::new(key)));
            }
        }
        Err(sv_webhook::certs::CertError::Key("64 draws gave no P-256 scalar".to_string()))
    }

    fn read_pem(&self, pem: &str) -> Result<Box<dyn sv_webhook::certs::CertKey>, sv_webhook::certs::CertError> {
        use p256::pkcs8::DecodePrivateKey as _;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| sv_webhook::certs::CertError::Stored(format!("a P-256 key in PKCS#8: {e}")))?;
        Ok(Box::new(SeededKey::new(key)))
    }
}

/// Makes the webhook's certificates follow the seed in this process (see [`SeededKeys`]).
pub fn seed_certificate_keys() {
    sv_webhook::certs::set_key_maker(Box::new(SeededKeys));
}

/// Runs `f` on a new thread, whose HashMap keys a world made there can still seed.
/// A known bug a test switched on for this thread is on there too ([`sv_common::bugs`]).
pub fn on_new_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let bugs = sv_common::bugs::Inherited::current();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                bugs.install();
                f()
            })
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The order a new thread's `HashMap` iterates in, after seeding it with `seed`.
    fn order_on_a_new_thread(seed: Option<u64>) -> (bool, Vec<u32>) {
        std::thread::spawn(move || {
            let seeded = seed.map(|seed| {
                sv_common::entropy::seed_thread(seed);
                seed_std_hash_keys()
            });
            let map: HashMap<u32, ()> = (0..64).map(|i| (i, ())).collect();
            (seeded.unwrap_or(false), map.into_keys().collect())
        })
        .join()
        .expect("the thread")
    }

    #[test]
    fn a_seeded_thread_iterates_hash_maps_in_the_seeds_order() {
        let (seeded, first) = order_on_a_new_thread(Some(5));
        assert!(seeded, "a new thread's keys come from the seed");
        assert_eq!(order_on_a_new_thread(Some(5)).1, first, "the same seed, the same order");
        let others: Vec<_> = (6..10).map(|seed| order_on_a_new_thread(Some(seed)).1).collect();
        assert!(others.iter().any(|o| *o != first), "other seeds, other orders");
        let unseeded: Vec<_> = (0..4).map(|_| order_on_a_new_thread(None).1).collect();
        assert!(unseeded.iter().any(|o| *o != unseeded[0]), "unseeded threads keep the kernel's keys");
    }

    #[test]
    fn a_thread_that_made_a_hash_map_first_keeps_its_keys_and_says_so() {
        let seeded = std::thread::spawn(|| {
            let _early: HashMap<u8, u8> = HashMap::new();
            sv_common::entropy::seed_thread(5);
            seed_std_hash_keys()
        })
        .join()
        .expect("the thread");
        assert!(!seeded);
    }

    #[test]
    fn a_seeded_thread_iterates_ahash_maps_in_the_seeds_order() {
        let order = |seed: u64| {
            std::thread::spawn(move || {
                assert!(seed_ahash_keys());
                seed_ahash_stream(seed);
                let map: ahash::AHashMap<u32, ()> = (0..64).map(|i| (i, ())).collect();
                map.into_keys().collect::<Vec<_>>()
            })
            .join()
            .expect("the thread")
        };
        assert_eq!(order(5), order(5));
        assert!((6..10).any(|seed| order(seed) != order(5)));
    }

    #[test]
    fn getrandom_and_getentropy_follow_the_seed_on_a_seeded_thread_only() {
        let draw = || {
            let mut a = [0u8; 24];
            let mut b = [0u8; 24];
            // SAFETY: buffers of the sizes given.
            unsafe {
                assert_eq!(getrandom(a.as_mut_ptr().cast(), a.len(), 0), 24);
                assert_eq!(getentropy(b.as_mut_ptr().cast(), b.len()), 0);
            }
            (a, b)
        };
        let seeded = |seed| {
            std::thread::spawn(move || {
                sv_common::entropy::seed_thread(seed);
                draw()
            })
            .join()
            .expect("the thread")
        };
        assert_eq!(seeded(3), seeded(3));
        assert_ne!(seeded(3), seeded(4));
        let kernel = std::thread::spawn(draw).join().expect("the thread");
        assert_ne!(kernel, std::thread::spawn(draw).join().expect("the thread"));
        // Through the getrandom crate, as ahash and rand reach it.
        let through_crate = |seed| {
            std::thread::spawn(move || {
                sv_common::entropy::seed_thread(seed);
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).expect("bytes");
                bytes
            })
            .join()
            .expect("the thread")
        };
        assert_eq!(through_crate(9), through_crate(9));
    }
}
