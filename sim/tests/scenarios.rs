//! Replays every scenario under `scenarios/` (see `sim/src/scenario.rs`).

use std::path::PathBuf;

use sv_sim::scenario::Scenario;

/// The scenarios, and the regressions `sv-sim explore` wrote (`scenarios/regressions/`).
fn scenario_files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = [root.clone(), root.join("regressions")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
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
    let regressions = files.iter().filter(|f| f.parent().is_some_and(|d| d.ends_with("regressions"))).count();
    eprintln!("{} scenario(s), of which {regressions} regression(s) from sv-sim explore", files.len());
    // Each in a process of its own, as a user replays it with `sv-sim run` (one seed replays byte
    // for byte there and in this process alike; docs/sim.md, "Determinism").
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for file in &files {
        let run =
            std::process::Command::new(env!("CARGO_BIN_EXE_sv-sim")).arg("run").arg(file).output().expect("sv-sim run");
        let stdout = String::from_utf8_lossy(&run.stdout).to_string();
        if !run.status.success() {
            failures.push(format!("{}: {}", file.display(), String::from_utf8_lossy(&run.stderr)));
            continue;
        }
        eprintln!("{}:\n{stdout}", file.display());
        // The report without its closing line (wall time, trace hash).
        let (outcome, closing) = stdout.trim_end().rsplit_once("\n\n").expect("a closing line");
        assert!(closing.starts_with("Simulated"), "{closing}");
        assert!(!closing.contains("was not from the seed"), "{}: {closing}", file.display());
        outcomes.push((file.clone(), format!("{outcome}\n")));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // What each named scenario did, reviewed and committed: a change in behaviour shows in the
    // diff (`cargo insta review` after a deliberate one).
    for (file, outcome) in outcomes {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if file.parent().is_some_and(|d| d.ends_with("regressions")) {
            continue;
        }
        insta::assert_snapshot!(name, outcome);
    }
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
    // No operator runs: nothing is failing or stalled, so the volume is held to being Ready, and
    // is not.
    let text = r#"
description: a volume nobody reconciles
operator: false
steps:
  - install: true
  - example: 13-http.yaml
  - runFor: 1m
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let error = scenario.run().expect_err("fails");
    assert_eq!(error.kind(), "liveness", "{error}");
    assert!(error.to_string().contains("default/http-sv"), "{error}");

    // With the operator and the source down, or refusing the volume's (absent) credentials, the
    // volume is expected to wait, and the run passes.
    let source = "http https://raw.githubusercontent.com/distribution/distribution/main/README.md";
    for source_step in [
        format!(r#"sourceFailing: {{identity: "{source}", status: 503, message: down}}"#),
        format!(
            r#"source: {{identity: "{source}", revision: r1, files: {{README.md: "x"}}, credential: only-with-this}}"#
        ),
    ] {
        let text =
            text.replace("operator: false\n", "").replace("  - example:", &format!("  - {source_step}\n  - example:"));
        let scenario: Scenario = serde_saphyr::from_str(&text).expect("parses");
        let report = scenario.run().unwrap_or_else(|e| panic!("{source_step}: the volume waits on its source: {e}"));
        assert!(report.liveness.contains("waiting on their failing source"), "{}", report.liveness);
    }
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

#[test]
fn crash_after_writes_stops_the_operator_right_after_its_nth_write_and_bounce_brings_it_back() {
    let text = r#"
description: the operator dies right after its second write once a volume arrives
steps:
  - install: true
  - runFor: 10s
  - crashAfterWrites: {host: operator, writes: 2}
  - apply: |
      {"apiVersion":"sv.sharedvolume.io/v1alpha1","kind":"SharedVolume","metadata":{"name":"v","namespace":"default"},"spec":{"mountPath":"/mnt/v","storageClassName":"standard","storage":{"capacity":"1Gi","accessMode":"ReadWrite"}}}
  - runFor: 30s
  - waitFor: {volume: default/v, phase: none}
  - bounce: operator
  - waitFor: {volume: default/v, phase: Ready, within: 3m}
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let (report, trace) = scenario.run_with(true).unwrap_or_else(|e| panic!("{e}"));
    let armed = trace.iter().position(|l| l.contains("crash operator armed")).expect("armed");
    let crashed = trace.iter().position(|l| l.contains("host crash operator at")).expect("the operator crashed");
    assert!(armed < crashed, "crashed before it was armed");
    // Between the two, exactly two writes of the operator that are not Leases or Events: the
    // answers read `answer <client> <verb> <resource> <name> <code>`, and the scenario's own
    // `apply` is answered to `in-process`.
    let writes: Vec<&String> = trace[armed..crashed]
        .iter()
        .filter(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            words.first() == Some(&"answer")
                && words.get(1) != Some(&"in-process")
                && words.get(2).is_some_and(|v| ["create", "update", "patch", "delete"].contains(v))
                && words.get(3).is_some_and(|r| !r.starts_with("leases") && !r.starts_with("events"))
        })
        .collect();
    assert_eq!(writes.len(), 2, "{:#?}", &trace[armed..=crashed]);
    assert!(report.liveness.contains("every volume Ready"), "{}", report.liveness);
}

#[test]
fn a_skewed_clock_shows_in_what_its_host_writes_and_nowhere_else() {
    let text = r#"
description: the operator's clock runs an hour ahead
steps:
  - install: true
  - clockSkew: {host: operator, by: 1h}
  - apply: |
      {"apiVersion":"sv.sharedvolume.io/v1alpha1","kind":"SharedVolume","metadata":{"name":"v","namespace":"default"},"spec":{"mountPath":"/mnt/v","storageClassName":"standard","storage":{"capacity":"1Gi","accessMode":"ReadWrite"}}}
  - waitFor: {volume: default/v, phase: Ready, within: 3m}
  - clockSkew: {host: operator, by: 0s}
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let mut timestamps = None;
    let report = scenario
        .run_inspecting(|world| {
            let volume = sv_sim::examples::volumes(&world.api).into_iter().next().expect("the volume");
            let time = |v: &serde_json::Value| {
                v.as_str().expect("a timestamp").parse::<k8s_openapi::jiff::Timestamp>().expect("parses")
            };
            let created = time(&volume["metadata"]["creationTimestamp"]);
            let condition = volume["status"]["conditions"].as_array().and_then(|c| c.first()).expect("a condition");
            timestamps = Some((created, time(&condition["lastTransitionTime"])));
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (created, transition) = timestamps.expect("inspected");
    let ahead = transition.duration_since(created);
    // The API server stamped the creation; the operator, an hour ahead, the condition.
    assert!(ahead >= k8s_openapi::jiff::SignedDuration::from_secs(3600), "{ahead:#}");
    assert!(ahead < k8s_openapi::jiff::SignedDuration::from_secs(3600 + 180), "{ahead:#}");
    assert!(report.liveness.contains("every volume Ready"), "{}", report.liveness);
}

#[test]
fn a_slow_source_syncs_within_its_timeout_and_past_it_keeps_the_published_revision() {
    let text = r#"
description: a source answers 5 s late, then 40 s late (past the 20 s syncTimeout), then on time
steps:
  - install: true
  - apply: |
      {"apiVersion":"sv.sharedvolume.io/v1alpha1","kind":"SharedVolume","metadata":{"name":"v","namespace":"default"},"spec":{"mountPath":"/mnt/v","storageClassName":"standard","storage":{"capacity":"1Gi"},"syncInterval":"30s","syncTimeout":"20s","source":{"http":{"url":"https://files.example.com/v.tar.gz"}}}}
  - sourceSlow: {identity: "http https://files.example.com/v.tar.gz", delay: 5s}
  - source: {identity: "http https://files.example.com/v.tar.gz", revision: r1, files: {README.md: one}}
  - waitFor: {volume: default/v, phase: Ready, revision: r1, within: 3m}
  - sourceSlow: {identity: "http https://files.example.com/v.tar.gz", delay: 40s}
  - source: {identity: "http https://files.example.com/v.tar.gz", revision: r2, files: {README.md: two}}
  - waitFor: {volume: default/v, condition: Synced=False, within: 2m}
  - waitFor: {volume: default/v, phase: Ready, revision: r1}
"#;
    let scenario: Scenario = serde_saphyr::from_str(text).expect("parses");
    let report = scenario.run().unwrap_or_else(|e| panic!("{e}"));
    // Still 40 s late at the end: the volume waits on its source, and liveness says so.
    assert!(report.liveness.contains("as expected: [\"default/v\"]"), "{}", report.liveness);

    let mut healed = scenario.clone();
    healed.steps.extend(
        serde_saphyr::from_str::<Vec<sv_sim::scenario::Step>>(
            r#"
- sourceSlow: {identity: "http https://files.example.com/v.tar.gz", delay: 0s}
- waitFor: {volume: default/v, phase: Ready, revision: r2, within: 2m}
"#,
        )
        .expect("parses"),
    );
    let report = healed.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.liveness.contains("every volume Ready"), "{}", report.liveness);
}
