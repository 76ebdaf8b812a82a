//! Two operator replicas hand the leader Lease over when the leader cannot renew it, is cut off
//! from the API server, or crashes; and at no moment do both act. The check reads the API server's
//! own record of requests: every write an operator replica made (Lease renewals aside) arrived
//! while that replica held an unexpired Lease, by the server's clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sv_operator::plan::DEFAULT_OPERATOR_NAMESPACE;
use sv_sim::api::{ApiServer, AuditEntry};
use sv_sim::examples::{example, install, volumes};
use sv_sim::world::{World, WorldConfig, operator_replica};

const LEASE: &str = "sharedvolume-operator-leader";
/// `LeaderConfig::lease_duration`: how long a renewal keeps the others out.
const LEASE_DURATION: SignedDuration = SignedDuration::from_secs(15);

/// The identity the stored Lease names, if any.
fn holder(api: &ApiServer) -> Option<String> {
    let state = api.state();
    let leases = state.registry.find("coordination.k8s.io", "v1", "leases")?;
    let lease = state.store.get(&leases.id, DEFAULT_OPERATOR_NAMESPACE, LEASE)?;
    lease["spec"]["holderIdentity"].as_str().map(String::from)
}

fn volume(name: &str) -> Value {
    json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"mountPath": format!("/{name}"), "storageClassName": "standard", "storage": {"capacity": "1Gi"}}})
}

/// Creates a volume and waits until it is Ready: whoever leads now does its work.
fn the_leader_acts(world: &mut World, name: &str) {
    for result in world.create_all([volume(name)]) {
        result.expect("create");
    }
    let ready =
        |api: &ApiServer| volumes(api).iter().any(|v| v["metadata"]["name"] == name && v["status"]["phase"] == "Ready");
    assert!(world.run_until(Duration::from_secs(300), ready).expect("run"), "{name} Ready under the new leader");
}

/// Writes by an operator replica that arrived while it did not hold an unexpired Lease. A
/// successful Lease write by a replica is its acquisition or renewal (a release happens only at
/// shutdown, which this test never asks for).
fn writes_without_the_lease(audit: &[AuditEntry], replicas: &BTreeMap<IpAddr, String>) -> Vec<String> {
    let mut lease: Option<(IpAddr, Timestamp)> = None;
    let mut violations = Vec::new();
    for entry in audit.iter().filter(|e| e.is_write() && e.succeeded()) {
        let Some(peer) = entry.peer.filter(|p| replicas.contains_key(p)) else { continue };
        // The operator writes one Lease; a create is by body, so it has no name in the path.
        if entry.resource == "leases" {
            lease = Some((peer, entry.at));
            continue;
        }
        let held = lease.is_some_and(|(by, renewed)| by == peer && entry.at.duration_since(renewed) < LEASE_DURATION);
        if !held {
            let lease = lease.map(|(by, renewed)| format!("{} renewed at {renewed}", replicas[&by]));
            violations.push(format!(
                "{} {} {}/{} at {} while the Lease was {}",
                replicas[&peer],
                entry.verb,
                entry.resource,
                entry.name,
                entry.at,
                lease.unwrap_or_else(|| "not held".into())
            ));
        }
    }
    violations
}

/// Runs until the Lease names another replica than `from`; returns the new holder and its host.
fn hand_over(world: &mut World, from: &str, hosts: &BTreeMap<String, String>) -> (String, String) {
    let from = from.to_string();
    let moved = move |api: &ApiServer| holder(api).is_some_and(|h| h != from);
    assert!(world.run_until(Duration::from_secs(120), moved).expect("run"), "the Lease moved to the other replica");
    let identity = holder(&world.api).expect("a holder");
    let host = hosts[&identity].clone();
    (identity, host)
}

#[test]
fn two_replicas_hand_over_under_lease_faults_partition_and_crash_and_never_act_at_once() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator_replicas: 2, ..WorldConfig::default() }).expect("a world");
    world.api.start_audit();
    let hosts: BTreeMap<String, String> = (0..2).map(operator_replica).map(|(host, id)| (id, host)).collect();
    let replicas: BTreeMap<IpAddr, String> =
        hosts.iter().map(|(id, host)| (world.sim.lookup(host.as_str()), id.clone())).collect();
    assert!(install(&world).expect("install").is_empty());
    for result in world.create_all(example("01-no-source.yaml").expect("example")) {
        result.expect("create");
    }
    let settled = |api: &ApiServer| {
        let all = volumes(api);
        !all.is_empty() && all.iter().all(|v| v["status"]["phase"] == "Ready") && holder(api).is_some()
    };
    assert!(world.run_until(Duration::from_secs(300), settled).expect("run"), "the examples Ready");
    let first = holder(&world.api).expect("a leader");
    let mut handovers = vec![first.clone()];

    // 1. The API server refuses the leader's Lease updates, and only those: it can still write
    //    everything else, so only its own renew deadline stops it before the other takes over.
    let leader_ip = world.sim.lookup(hosts[&first].as_str());
    world.api.set_request_fault(Some(Arc::new(move |peer, _verb, resource| {
        (peer == Some(leader_ip) && resource == "leases").then_some(500)
    })));
    let (second, second_host) = hand_over(&mut world, &first, &hosts);
    world.api.set_request_fault(None);
    handovers.push(second.clone());
    the_leader_acts(&mut world, "after-renewals-failed");

    // 2. The leader is cut off from the API server.
    world.sim.partition(second_host.as_str(), "api");
    let (third, _) = hand_over(&mut world, &second, &hosts);
    world.sim.repair(second_host.as_str(), "api");
    handovers.push(third.clone());
    the_leader_acts(&mut world, "after-partition");

    // 3. The leader crashes; it comes back later as a standby.
    let third_host = hosts[&third].clone();
    world.crash(&third_host);
    let (fourth, _) = hand_over(&mut world, &third, &hosts);
    handovers.push(fourth);
    the_leader_acts(&mut world, "after-crash");
    world.bounce(&third_host);
    world.run_for(Duration::from_secs(60)).expect("run");
    assert_eq!(holder(&world.api).as_deref(), handovers.last().map(String::as_str), "a restarted replica waits");

    let audit = world.api.audit();
    let writers: BTreeMap<&String, usize> = audit
        .iter()
        .filter(|e| e.is_write() && e.succeeded() && e.resource != "leases")
        .filter_map(|e| e.peer.and_then(|p| replicas.get(&p)))
        .fold(BTreeMap::new(), |mut n, id| {
            *n.entry(id).or_insert(0) += 1;
            n
        });
    assert_eq!(writers.len(), 2, "both replicas wrote while leading (else there is nothing to compare): {writers:?}");
    let violations = writes_without_the_lease(&audit, &replicas);
    assert!(violations.is_empty(), "writes outside the Lease (hand-overs {handovers:?}):\n{}", violations.join("\n"));
    eprintln!("hand-overs {handovers:?}; writes by replica {writers:?}");
}
