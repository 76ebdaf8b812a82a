//! Differential check against a real kube-apiserver v1.36.2: the recorded transcript tool
//! (`tests/kube-api/`, from the project's shared folder) runs its 247 calls against the simulated
//! server, and the result is diffed with the real server's transcript. The steps that still
//! differ are listed here with the reason; any other difference fails the test.

use crate::common;

use std::path::Path;
use std::process::Command;

/// Steps known to differ, each for a stated reason (see docs/sim.md).
const KNOWN_DIFFERENCES: &[&str] = &[
    "discovery-apis-aggregated-v2", // group order and per-resource details of aggregated discovery
    "discovery-apis-aggregated-after-crd", // same
    "watch-send-initial-events",    // a timing-dependent bookmark
    "cm-delete-collection",         // deletecollection answers with the items as stored before deletion
    "pv-create",                    // PV defaults (volumeMode, hostPath.type) not all filled in
    "pv-bound",                     // same
    "pvc-change-immutable-spec",    // the real message appends a Go struct diff
    "sts-create",                   // pod template defaults not all filled in
    "sts-pod-created",              // controller-revision-hash is a different (stable) hash
    "sts-status",                   // template defaults
    "rs-create",                    // template defaults
    "rs-pods",                      // pod defaults (tolerations, enableServiceLinks...)
    "rs-status",                    // template defaults
    "rs-delete-foreground",         // template defaults
    "rs-foreground-owner-waiting",  // template defaults
    "nsdel-delete-again",           // namespace status conditions written at a different moment
    "event-create-invalid",         // cause order of an invalid Event
    "event-create-core-v1",         // core Event defaults (eventTime, reportingComponent)
    "crd-delete-sharedvolumes",     // the CRD cleanup finishes within the DELETE here
    "crd-delete-clustersharedvolumes", // same
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_servers_transcript_is_reproduced() {
    if Command::new("python3").arg("--version").output().is_err() {
        common::skip("python3 is not installed");
        return;
    }
    let sim = common::start_cluster().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube-api");
    let out = tempfile::tempdir().expect("tempdir");
    let ours = out.path().join("sim.json");
    let server = format!("http://{}", sim.address);
    let record = tokio::task::spawn_blocking({
        let (dir, ours) = (dir.clone(), ours.clone());
        move || {
            Command::new("python3")
                .arg(dir.join("kube-api-transcript.py"))
                .args(["--server", &server, "--max-wait", "10", "--quiet", "--out"])
                .arg(&ours)
                .output()
                .expect("run the transcript tool")
        }
    })
    .await
    .expect("join");
    let printed = String::from_utf8_lossy(&record.stdout).to_string() + &String::from_utf8_lossy(&record.stderr);
    assert!(record.status.success(), "{printed}");
    assert!(printed.contains(", 0 unexpected statuses"), "every call gets the status the real server gave:\n{printed}");

    let diff = Command::new("python3")
        .arg(dir.join("kube-api-transcript.py"))
        .arg("--diff")
        .arg(dir.join("real-kube-apiserver-v1.36.2.json"))
        .arg(&ours)
        .args(["--ignore", "managedFields", "--ignore", "resourceVersion$"])
        .output()
        .expect("diff");
    // Exit status 0 is identical, 1 is differences; a crash (a traceback, also status 1) or a
    // usage error must not pass for "no difference".
    let (status, errors) = (diff.status.code(), String::from_utf8_lossy(&diff.stderr).to_string());
    assert!(
        matches!(status, Some(0 | 1)) && errors.trim().is_empty(),
        "the transcript diff failed ({status:?}): {errors}"
    );
    let diff = String::from_utf8_lossy(&diff.stdout).to_string();
    let differing: Vec<&str> =
        diff.lines().filter_map(|l| l.strip_prefix("=== step ")).filter_map(|l| l.split_whitespace().nth(1)).collect();
    let summary = format!("--- 247 steps compared, {} differ", differing.len());
    assert!(diff.lines().any(|l| l.starts_with(&summary)), "the diff ends with {summary:?}:\n{diff}");
    assert_eq!(status, Some(if differing.is_empty() { 0 } else { 1 }), "the diff's status agrees with its steps");
    let unexpected: Vec<&&str> = differing.iter().filter(|s| !KNOWN_DIFFERENCES.contains(s)).collect();
    assert!(unexpected.is_empty(), "steps that newly differ from the real server: {unexpected:?}\n{diff}");
    assert!(!diff.contains("=== top-level"), "{diff}");
    eprintln!("{} of 247 steps differ, all known", differing.len());
}
