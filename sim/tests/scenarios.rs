//! Replays every scenario under `scenarios/` (see `sim/src/scenario.rs`).

use std::path::PathBuf;

use sv_sim::scenario::Scenario;

fn scenario_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the scenarios folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_replays_and_keeps_the_invariants() {
    sv_sim::init_test_logging();
    let files = scenario_files();
    assert!(files.len() >= 3, "{files:?}");
    let mut failures = Vec::new();
    for file in &files {
        match Scenario::load(file).and_then(|s| s.run()) {
            Ok(report) => eprintln!("{}:\n{report}", file.display()),
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_scenario_that_expects_the_impossible_fails_at_its_step() {
    let text = r#"
description: the volume never becomes Ready, since its source refuses every fetch
steps:
  - install: true
  - sourceFailing: {identity: "http https://raw.githubusercontent.com/distribution/distribution/main/README.md", status: 404, message: gone}
  - example: 13-http.yaml
  - waitFor: {volume: default/http-sv, phase: Ready, within: 2m}
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let error = scenario.run().expect_err("fails").to_string();
    assert!(error.starts_with("step 4 "), "{error}");
    assert!(error.contains("not reached within"), "{error}");

    let bad: Result<Scenario, _> = serde_saphyr::from_str("description: x\nsteps:\n  - teleport: now\n");
    assert!(bad.is_err(), "unknown steps are refused");
}

#[test]
fn a_volume_that_never_gets_ready_after_the_faults_heal_fails_the_liveness_check() {
    // The source wants a credential the volume does not give: nothing is failing or stalled, so
    // the volume is held to being Ready, and is not.
    let text = r#"
description: a source that refuses the volume's (absent) credentials
steps:
  - install: true
  - source: {identity: "http https://raw.githubusercontent.com/distribution/distribution/main/README.md", revision: r1, files: {README.md: "x"}, credential: only-with-this}
  - example: 13-http.yaml
  - runFor: 1m
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let error = scenario.run().expect_err("fails").to_string();
    assert!(error.contains("liveness") && error.contains("default/http-sv"), "{error}");

    // The same with the source down: the volume is expected to wait, and the run passes.
    let failing = text.replace(
        r#"  - source: {identity: "http https://raw.githubusercontent.com/distribution/distribution/main/README.md", revision: r1, files: {README.md: "x"}, credential: only-with-this}"#,
        r#"  - sourceFailing: {identity: "http https://raw.githubusercontent.com/distribution/distribution/main/README.md", status: 503, message: down}"#,
    );
    let scenario: Scenario = serde_saphyr::from_str(&failing).expect("parses");
    let report = scenario.run().expect("a failing source is waited on");
    assert!(report.liveness.contains("waiting on their failing source"), "{}", report.liveness);
}

#[test]
fn check_determinism_finds_two_runs_of_a_cluster_without_the_operator_the_same() {
    // Without the operator, what runs is the simulated control plane and plain pods: replayed
    // exactly. (With the operator, kube-runtime's hash maps still order some work by process
    // randomness: `sv-sim run --check-determinism` shows where; see docs/sim.md.)
    let text = r#"
description: workloads and a lost node, without the operator
operator: false
steps:
  - install: true
  - apply: |
      apiVersion: apps/v1
      kind: StatefulSet
      metadata: {name: db, namespace: default}
      spec:
        replicas: 2
        serviceName: db
        selector: {matchLabels: {app: db}}
        template:
          metadata: {labels: {app: db}}
          spec: {containers: [{name: db, image: postgres:17}]}
  - runFor: 30s
  - loseNode: node-1
  - runFor: 6m
  - outOfService: lost
  - runFor: 1m
  - nodeBack: lost
  - runFor: 30s
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let comparison = scenario.check_determinism().expect("runs");
    assert!(comparison.same(), "{comparison}");
    assert!(comparison.events.0 > 30, "the trace holds the run: {comparison}");
}
