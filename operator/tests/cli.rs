//! The `sv-operator` offline commands, run as the binary: `validate` reports every document of
//! every file and goes on past one it cannot read; `plan --objects` prints YAML that parses.

use std::process::Command;

fn sv_operator(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sv-operator")).args(args).output().expect("sv-operator runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_reports_every_document_and_goes_on_past_unreadable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mixed = dir.path().join("mixed.yaml");
    std::fs::write(
        &mixed,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: team-a}\n---\nkind: NoVersion\n---\n\
         apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata: {name: bad, namespace: team-a}\n\
         spec: {mountPath: relative, storageClassName: standard, storage: {capacity: 1Gi}}\n",
    )
    .expect("write");
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "{{{: not yaml").expect("write");
    let missing = dir.path().join("missing.yaml");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/02-git-public.yaml");
    let paths = [mixed.to_str(), garbage.to_str(), missing.to_str(), Some(example)].map(|p| p.expect("utf-8"));
    let (code, out, _) = sv_operator(&["validate", paths[0], paths[1], paths[2], paths[3]]);
    assert_ne!(code, 0, "an invalid volume or unreadable file fails the command:\n{out}");
    for expected in [
        "skipped  Secret team-a/creds",
        "document 1: apiVersion and kind are required",
        "INVALID  SharedVolume team-a/bad",
        "spec.mountPath",
        "UNREADABLE",
        "garbage.yaml",
        "missing.yaml",
        // The files after the unreadable ones are still checked.
        "valid    SharedVolume git-public-sv",
        "3 volume(s) checked, 2 invalid, 2 file(s) unreadable",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}

#[test]
fn plan_objects_prints_yaml_that_applies_as_printed() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let (code, out, err) = sv_operator(&["plan", "--objects", examples]);
    assert_eq!(code, 0, "{err}");
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("stdout is YAML only");
    assert!(documents.len() > 100, "{} objects", documents.len());
    for doc in &documents {
        assert!(doc["kind"].is_string() && doc["metadata"]["name"].is_string(), "{doc}");
        // Nothing only the API server assigns: no ClusterIP, no owner uid.
        assert!(doc["spec"].get("clusterIP").is_none(), "{doc}");
        assert!(doc["metadata"].get("ownerReferences").is_none(), "{doc}");
    }
    assert!(err.contains("volume(s) planned") && !out.contains("volume(s) planned"), "the summary goes to stderr");
}
