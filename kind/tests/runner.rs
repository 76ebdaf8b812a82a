//! The runner of `sv-kind run`, on a plan of shell commands: expectations, retries, the command
//! limit, diagnostics collected and the cluster deleted when a step fails.

use std::path::Path;
use std::time::Duration;

use sv_kind::{ClusterPlan, Cmd, Expect, Plan, RunOptions, Step};

fn sh(script: &str) -> Cmd {
    Cmd { program: "sh".to_string(), args: vec!["-c".to_string(), script.to_string()] }
}

fn step(what: &str, script: &str, expect: Expect) -> Step {
    Step { what: what.to_string(), command: sh(script), expect, retry_for: None }
}

fn cluster(root: &Path, steps: Vec<Step>) -> ClusterPlan {
    ClusterPlan {
        version: "9.9".to_string(),
        name: "test".to_string(),
        steps,
        diagnostics: vec![("events.txt".to_string(), sh("echo the events"))],
        teardown: sh("touch torn-down"),
        logs: root.join("logs/test"),
    }
}

fn options(root: &Path) -> RunOptions {
    RunOptions { root: root.to_path_buf(), keep_failed: false, command_limit: Duration::from_secs(5) }
}

#[test]
fn a_passing_cluster_is_torn_down_and_leaves_no_diagnostics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = Plan {
        build: vec![step("build", "echo built", Expect::Success)],
        clusters: vec![cluster(
            dir.path(),
            vec![
                step("prints", "echo revision 1", Expect::Prints("revision 1".into())),
                step("nothing left", "true", Expect::PrintsNothing),
                step("gone", "echo other", Expect::Lacks("sv.sharedvolume.io".into())),
            ],
        )],
    };
    let mut out = Vec::new();
    let outcomes = sv_kind::run(&plan, &options(dir.path()), &mut out).expect("run");
    let out = String::from_utf8(out).expect("UTF-8");
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].failed.is_none(), "{out}");
    assert!(dir.path().join("torn-down").exists(), "the cluster is deleted after a run");
    assert!(!dir.path().join("logs").exists(), "diagnostics only for a failure");
}

#[test]
fn a_failed_step_stops_its_cluster_collects_diagnostics_and_still_deletes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = Plan {
        build: Vec::new(),
        clusters: vec![cluster(
            dir.path(),
            vec![
                step("reads the file", "echo revision 1", Expect::Prints("revision 2".into())),
                step("never reached", "touch reached", Expect::Success),
            ],
        )],
    };
    let mut out = Vec::new();
    let outcomes = sv_kind::run(&plan, &options(dir.path()), &mut out).expect("run");
    let why = outcomes[0].failed.clone().expect("the step fails");
    assert!(why.contains("reads the file") && why.contains("expected \"revision 2\", got: revision 1"), "{why}");
    assert!(!dir.path().join("reached").exists(), "the steps after a failure do not run");
    let events = std::fs::read_to_string(dir.path().join("logs/test/events.txt")).expect("diagnostics");
    assert_eq!(events.trim(), "the events");
    assert!(dir.path().join("torn-down").exists(), "a failed cluster is deleted too");
}

#[test]
fn a_retried_step_passes_once_its_expectation_holds_and_a_hung_command_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ] && echo synced || echo waiting";
    let mut retried = step("eventually", counting, Expect::Prints("synced".into()));
    retried.retry_for = Some(Duration::from_secs(30));
    let plan = Plan {
        build: Vec::new(),
        clusters: vec![cluster(dir.path(), vec![retried, step("hangs", "sleep 60", Expect::Success)])],
    };
    let mut out = Vec::new();
    let outcomes = sv_kind::run(&plan, &options(dir.path()), &mut out).expect("run");
    assert_eq!(std::fs::read_to_string(dir.path().join("count")).expect("count").trim(), "2", "ran until it held");
    let why = outcomes[0].failed.clone().expect("the hung command fails");
    assert!(why.contains("hangs") && why.contains("killed after 5 s"), "{why}");
}

#[test]
fn a_failed_build_fails_every_cluster_without_creating_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = Plan {
        build: vec![step("build", "echo no engine >&2; false", Expect::Success)],
        clusters: vec![cluster(dir.path(), vec![step("create", "touch created", Expect::Success)])],
    };
    let mut out = Vec::new();
    let outcomes = sv_kind::run(&plan, &options(dir.path()), &mut out).expect("run");
    let why = outcomes[0].failed.clone().expect("failed");
    assert!(why.contains("building the images") && why.contains("no engine"), "{why}");
    assert!(!dir.path().join("created").exists());
}
