//! Self-issued certificates across four years of simulated time: at every step the API server,
//! trusting the `caBundle` it was last given, accepts the leaf every replica serves, through a
//! leaf renewal, a CA rotation and the end of its overlap. Checked with rustls's own verifier.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sv_webhook::certs::{CertSet, Lifetimes, next, service_dns_names};

fn verify(bundle: &str, leaf_pem: &str, now: Timestamp) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| e.to_string())?;
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("sv-webhook.sv-system.svc").map_err(|e| e.to_string())?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now.as_second()).unwrap_or(0)));
    verifier.verify_server_cert(&leaf, &[], &name, &[], at).map(|_| ()).map_err(|e| e.to_string())
}

#[derive(Default)]
struct Counts {
    leaf_renewals: usize,
    ca_rotations: usize,
    overlaps_ended: usize,
}

#[test]
fn rotation_never_leaves_a_replica_untrusted() {
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(365 * 24 * 3600),
        leaf: Duration::from_secs(30 * 24 * 3600),
        overlap: Duration::from_secs(2 * 24 * 3600),
    };
    let names = service_dns_names("sv-webhook", "sv-system");
    let step = SignedDuration::from_hours(12);
    let mut now = Timestamp::from_second(1_790_000_000).expect("time");
    let mut stored: Option<CertSet> = None;
    // What the API server trusts (the configurations' caBundle), and the leaf each of two
    // replicas serves: one reloads at once, the other one step later.
    let mut published = String::new();
    let (mut fast, mut slow) = (String::new(), String::new());
    let mut pending_for_slow = String::new();
    let mut counts = Counts::default();
    let mut checks = 0;
    for _ in 0..(4 * 365 * 2) {
        let bundle_published = stored.as_ref().is_some_and(|s| s.bundle() == published);
        if let Some(new) = next(stored.as_ref(), bundle_published, &names, now, &lifetimes).expect("issues") {
            if let Some(old) = &stored {
                if new.ca_pem != old.ca_pem {
                    counts.ca_rotations += 1;
                    assert_eq!(new.leaf_pem, old.leaf_pem, "a new CA is published before any leaf it signs");
                } else if new.leaf_pem != old.leaf_pem {
                    counts.leaf_renewals += 1;
                } else if old.state.previous_ca_pem.is_some() && new.state.previous_ca_pem.is_none() {
                    counts.overlaps_ended += 1;
                }
            }
            stored = Some(new);
        }
        let set = stored.as_ref().expect("stored");
        // The keeper publishes the stored bundle in the same round.
        published = set.bundle();
        slow = std::mem::replace(&mut pending_for_slow, set.leaf_pem.clone());
        if slow.is_empty() {
            slow = set.leaf_pem.clone();
        }
        fast = set.leaf_pem.clone();
        for (replica, leaf) in [("fast", &fast), ("slow", &slow)] {
            verify(&published, leaf, now).unwrap_or_else(|e| panic!("{replica} replica untrusted at {now}: {e}"));
            checks += 1;
        }
        now = now.checked_add(step).expect("time");
    }
    assert!(counts.leaf_renewals >= 30, "leaves renewed: {}", counts.leaf_renewals);
    assert!(counts.ca_rotations >= 4, "CAs rotated: {}", counts.ca_rotations);
    assert_eq!(counts.overlaps_ended, counts.ca_rotations, "every overlap ended");
    assert_eq!(checks, 4 * 365 * 2 * 2);
    let _ = (fast, slow);
}

#[test]
fn without_the_overlap_the_slow_replica_would_be_refused() {
    // The property the rotation protects, shown failing: a bundle of the new CA alone does not
    // trust the old leaf.
    let year = Duration::from_secs(365 * 24 * 3600);
    let lifetimes = Lifetimes { ca: year, leaf: year, overlap: Duration::from_secs(24 * 3600) };
    let names = service_dns_names("sv-webhook", "sv-system");
    let t0 = Timestamp::from_second(1_790_000_000).expect("time");
    let first = next(None, false, &names, t0, &lifetimes).expect("issue").expect("set");
    let late = t0.checked_add(SignedDuration::from_hours(24 * 250)).expect("time");
    let rotated = next(Some(&first), true, &names, late, &lifetimes).expect("issue").expect("set");
    assert!(rotated.state.previous_ca_pem.is_some(), "the CA rotation started");
    verify(&rotated.bundle(), &first.leaf_pem, late).expect("the overlap trusts the old leaf");
    assert!(verify(&rotated.ca_pem, &first.leaf_pem, late).is_err(), "the new CA alone does not");
}

#[test]
fn a_stored_set_survives_the_secret_round_trip_and_garbage_is_named() {
    let names = service_dns_names("sv-webhook", "sv-system");
    let set = next(None, false, &names, Timestamp::from_second(1_790_000_000).expect("t"), &Lifetimes::default())
        .expect("issue")
        .expect("set");
    let data = set.to_secret_data();
    assert_eq!(CertSet::from_secret_data(&data).expect("reads"), set);
    let mut broken = data.clone();
    broken.remove("state.json");
    let err = CertSet::from_secret_data(&broken).expect_err("incomplete");
    assert!(err.to_string().contains("state.json"), "{err}");
}
