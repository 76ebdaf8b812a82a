//! Exploration (`sim/src/explore.rs`): explored seeds keep every invariant, and each known bug
//! switched on (`sv_common::bugs`) is found within the default budget, shrunk, and written as a
//! scenario that fails with the bug and passes without it.

use sv_common::bugs::{self, Bug};
use sv_sim::explore::{self, ExploreConfig, Outcome};
use sv_sim::invariants;
use sv_sim::programs::consumer::Invariant;
use sv_sim::scenario::Scenario;

/// The invariants of which one must catch each known bug.
fn oracle(bug: Bug) -> Vec<String> {
    let names: &[&str] = match bug {
        Bug::ForgetConsumerClaim => &[invariants::CLEANUP],
        Bug::NfsAddressChangesAfterRestart => &[invariants::ADDRESS],
        Bug::PublishIncompleteTree => return vec![Invariant::MixedRevision.to_string()],
        Bug::MountOutsideNamespaces => &[invariants::NAMESPACES],
        Bug::SecretInCondition => &[invariants::SECRETS, invariants::LOGS],
        // A writer's acknowledged record lost with the node, or the syncer's manifest (written
        // FILE_SYNC through the same server) lost under a published revision.
        Bug::AckUnsyncedWrite => return vec![Invariant::LostWrite.to_string(), Invariant::MixedRevision.to_string()],
    };
    names.iter().map(|n| n.to_string()).collect()
}

fn found_and_shrunk(bug: Bug) {
    sv_sim::init_test_logging();
    let dir = tempfile::tempdir().expect("a directory for regressions");
    // One seed at a time: the test harness already runs the tests side by side.
    let config = ExploreConfig {
        regressions: Some(dir.path().to_path_buf()),
        stop_at_first: true,
        jobs: 1,
        ..Default::default()
    };
    bugs::inject(Some(bug));
    let explored = explore::explore(&config, |entry| eprintln!("{}", explore::describe(entry)));
    bugs::inject(None);
    let found = explored
        .iter()
        .find(|e| matches!(e.outcome, Outcome::Failed(_)))
        .unwrap_or_else(|| panic!("{bug:?}: {} seeds explored within the default budget, none failed", explored.len()));
    let shrunk = found.shrunk.as_ref().expect("a failure is shrunk");
    let kind = shrunk.error.kind();
    assert!(oracle(bug).contains(&kind), "{bug:?} was caught by {kind:?}, not by {:?}", oracle(bug));
    assert!(
        shrunk.scenario.steps.len() < found.steps,
        "{bug:?}: not shrunk ({} steps, {} before)",
        shrunk.scenario.steps.len(),
        found.steps
    );
    // The file written replays the failure with the bug, and passes without it.
    let path = found.written.as_ref().expect("the shrunk failure is written");
    let scenario = Scenario::load(path).expect("the written scenario loads");
    bugs::inject(Some(bug));
    let replayed = explore::run(&scenario);
    bugs::inject(None);
    match replayed {
        Outcome::Failed(e) => assert_eq!(e.kind(), kind, "{bug:?}: the written scenario fails another way: {e}"),
        other => panic!("{bug:?}: the written scenario does not fail: {other:?}"),
    }
    match explore::run(&scenario) {
        Outcome::Passed(_) => {}
        other => panic!("{bug:?}: without the bug the written scenario should pass: {other:?}"),
    }
    eprintln!(
        "{bug:?}: found at seed {}, shrunk from {} to {} steps in {} runs",
        found.seed,
        shrunk.from_steps,
        shrunk.scenario.steps.len(),
        shrunk.runs
    );
}

#[test]
fn exploration_finds_and_shrinks_a_webhook_that_mounts_outside_the_allowed_namespaces() {
    found_and_shrunk(Bug::MountOutsideNamespaces);
}

#[test]
fn exploration_finds_and_shrinks_an_nfs_address_that_changes_after_an_operator_restart() {
    found_and_shrunk(Bug::NfsAddressChangesAfterRestart);
}

#[test]
fn exploration_finds_and_shrinks_a_forgotten_consumer_claim() {
    found_and_shrunk(Bug::ForgetConsumerClaim);
}

#[test]
fn exploration_finds_and_shrinks_a_secret_value_in_a_condition() {
    found_and_shrunk(Bug::SecretInCondition);
}

#[test]
fn exploration_finds_and_shrinks_a_file_sync_write_acknowledged_without_its_sync() {
    found_and_shrunk(Bug::AckUnsyncedWrite);
}

#[test]
fn exploration_finds_and_shrinks_a_revision_published_before_its_last_file() {
    found_and_shrunk(Bug::PublishIncompleteTree);
}

/// A few explored seeds keep every invariant and converge once their faults heal. More with
/// `SV_EXPLORE_SEEDS=N` (and `SV_EXPLORE_FIRST_SEED`); long runs: `sv-sim explore`.
#[test]
fn explored_seeds_keep_every_invariant() {
    sv_sim::init_test_logging();
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let config = ExploreConfig {
        first_seed: number("SV_EXPLORE_FIRST_SEED", 1),
        seeds: number("SV_EXPLORE_SEEDS", 3),
        jobs: 1,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let explored = explore::explore(&config, |entry| eprintln!("{}", explore::describe(entry)));
    let summary = explore::Summary::of(&explored, started.elapsed());
    eprint!("{summary}");
    let failed: Vec<String> =
        explored.iter().filter(|e| matches!(e.outcome, Outcome::Failed(_))).map(explore::describe).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(summary.passed > 0, "no explored seed ran to its end: {summary}");
}
