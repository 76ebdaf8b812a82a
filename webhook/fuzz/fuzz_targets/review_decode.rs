//! Any body the webhook may be sent: decoding never panics, and whatever decodes is answered by
//! both handlers without a panic. Seeded with the AdmissionReviews a real API server sent
//! (`ci/fuzz.sh` passes `webhook/tests/admission/requests` as a seed corpus).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sv_webhook::cluster::Snapshot;
use sv_webhook::mutate::{MutateSettings, mutate};
use sv_webhook::review::decode;
use sv_webhook::validate::validate;

fn cluster() -> &'static Snapshot {
    static CLUSTER: OnceLock<Snapshot> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut snapshot = Snapshot::default();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cluster.yaml");
        snapshot.load_file(std::path::Path::new(fixtures)).expect("fixtures");
        snapshot
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode(data) {
        let _ = mutate(&request, cluster(), &MutateSettings::default());
        let _ = validate(&request);
    }
});
