//! `sv-webhook review` as users run it: the answer on stdout, what it would create on stderr,
//! exit 0 for any answer and non-zero only when the input cannot be read.

use std::path::Path;
use std::process::Command;

fn sv_webhook(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sv-webhook")).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn path(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative).display().to_string()
}

#[test]
fn review_prints_the_answer_and_the_objects_it_would_create() {
    let cluster = path("tests/fixtures/cluster.yaml");
    let request = path("tests/admission/requests/016-pod-create-patched-pod.json");
    let (code, stdout, stderr) = sv_webhook(&["review", "--cluster", &cluster, &request]);
    assert_eq!(code, 0, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is the AdmissionReview JSON");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_string());
    assert!(stderr.contains("kind: PersistentVolumeClaim") && stderr.contains("sv-0123456789ab-team-a"), "{stderr}");

    // A denial is an answer: exit 0.
    let (code, stdout, _) = sv_webhook(&["review", &request]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("\"allowed\": false") && stdout.contains("SharedVolume \\\"data\\\" does not exist"),
        "{stdout}"
    );
}

#[test]
fn unreadable_input_fails_with_the_reason() {
    let (code, _, stderr) = sv_webhook(&["review", "/nonexistent/review.json"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/review.json"), "{stderr}");
    let cluster = path("Cargo.toml");
    let request = path("tests/admission/requests/001-pod-create-plain.json");
    let (code, _, stderr) = sv_webhook(&["review", "--cluster", &cluster, &request]);
    assert_ne!(code, 0, "a cluster file that is not YAML objects is refused");
    assert!(stderr.contains("Cargo.toml"), "{stderr}");
    let (code, stdout, _) = sv_webhook(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("serve") && stdout.contains("review"));
}
