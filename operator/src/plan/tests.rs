use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde::Serialize;

use super::*;
use crate::api::{Phase, SyncStatus, condition, sync_result};
use crate::manifests;
use crate::names::is_dns1123_label;
use crate::offline::{OfflineCluster, Stage};

fn examples() -> OfflineCluster {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let loaded = manifests::load(&dir).expect("examples load");
    OfflineCluster::from_manifests(loaded.into_iter().map(|(_, m)| m))
}

fn settings() -> Settings {
    Settings {
        nfs_image: "ghcr.io/sharedvolume/sv-nfs:test".to_string(),
        syncer_image: "ghcr.io/sharedvolume/sv-syncer:test".to_string(),
        ..Settings::default()
    }
}

/// A serializable view of a plan for snapshots.
#[derive(Serialize)]
struct PlanView<'a> {
    reference: &'a str,
    set_reference_value: &'a Option<String>,
    objects: &'a [Desired],
    delete: Vec<String>,
    status: &'a VolumeStatus,
    events: Vec<String>,
    requeue_after_seconds: u64,
}

fn view(plan: &Plan) -> PlanView<'_> {
    PlanView {
        reference: &plan.reference,
        set_reference_value: &plan.set_reference_value,
        objects: &plan.objects,
        delete: plan.delete.iter().map(ToString::to_string).collect(),
        status: &plan.status,
        events: plan
            .events
            .iter()
            .map(|e| format!("{} {}: {}", if e.warning { "Warning" } else { "Normal" }, e.reason, e.note))
            .collect(),
        requeue_after_seconds: plan.requeue_after.as_secs(),
    }
}

#[test]
fn example_plans_match_snapshots() {
    let cluster = examples();
    let settings = settings();
    assert!(cluster.volumes.len() >= 28, "found {} example volumes", cluster.volumes.len());
    for volume in &cluster.volumes {
        for (stage, label) in [(Stage::Fresh, "fresh"), (Stage::Serving, "serving")] {
            let plan = plan(&cluster.observe(volume, stage, &settings), &settings);
            let name = format!("{}-{}-{label}", volume.kind.as_str().to_lowercase(), volume.name);
            insta::assert_yaml_snapshot!(name, view(&plan));
        }
    }
}

#[test]
fn every_example_reaches_ready_when_serving() {
    let cluster = examples();
    let settings = settings();
    for volume in &cluster.volumes {
        let fresh = plan(&cluster.observe(volume, Stage::Fresh, &settings), &settings);
        assert_ne!(fresh.status.phase(), Some(Phase::Failed), "{}: {:?}", volume.name, fresh.status.message);
        let serving = plan(&cluster.observe(volume, Stage::Serving, &settings), &settings);
        assert_eq!(serving.status.phase(), Some(Phase::Ready), "{}: {:?}", volume.name, serving.status.message);
        assert!(serving.delete.is_empty(), "{}: {:?}", volume.name, serving.delete);
    }
}

#[test]
fn every_generated_name_is_a_short_dns_label() {
    let cluster = examples();
    let settings = settings();
    for volume in &cluster.volumes {
        let plan = plan(&cluster.observe(volume, Stage::Serving, &settings), &settings);
        for object in &plan.objects {
            let key = object.key();
            assert!(is_dns1123_label(&key.name), "{key} is not a DNS-1123 label of at most 63 characters");
        }
    }
}

fn base_observed(kind: VolumeKind, spec_yaml: &str) -> Observed {
    let spec: VolumeSpec = serde_saphyr::from_str(spec_yaml).expect("spec parses");
    let namespace = (kind == VolumeKind::SharedVolume).then_some("team-a");
    let mut o = Observed::new(kind, "vol", namespace, "3f1c7a52-0d7e-4f1a-9d65-2a9c0e7f3b21", spec);
    o.storage_class = Lookup::Found(());
    o.node_addresses = BTreeMap::from([
        ("node-1".to_string(), BTreeSet::from(["172.18.0.2".to_string()])),
        ("node-2".to_string(), BTreeSet::from(["172.18.0.3".to_string()])),
        ("node-3".to_string(), BTreeSet::from(["172.18.0.4".to_string()])),
    ]);
    // As the controller does when the writer Secret does not exist yet.
    o.nfs.new_writer_token = Some(TEST_WRITER_TOKEN.to_string());
    o
}

/// A writer token as the controller would store one (tests only: real ones come from the OS).
const TEST_WRITER_TOKEN: &str = "00112233445566778899aabbccddeeff";

const HTTP_SPEC: &str = r#"
mountPath: /opt/mnt/data
storageClassName: standard
storage: {capacity: 1Gi}
source: {http: {url: "https://example.com/file"}}
"#;

fn serving(mut o: Observed) -> Observed {
    o.nfs = NfsObserved {
        statefulset_ready: Some(1),
        service_ip: Some("10.96.0.10".to_string()),
        service_exists: true,
        data_claim_phase: Some("Bound".to_string()),
        writer_token: Some(TEST_WRITER_TOKEN.to_string()),
        new_writer_token: None,
        pod_problem: None,
    };
    o.syncer_ready = Some(1);
    o
}

fn keys(plan: &Plan) -> Vec<String> {
    plan.objects.iter().map(|d| d.key().to_string()).collect()
}

#[test]
fn fresh_managed_volume_creates_server_then_waits() {
    let o = base_observed(VolumeKind::SharedVolume, HTTP_SPEC);
    let p = plan(&o, &settings());
    let r = &p.reference;
    assert_eq!(p.set_reference_value.as_deref(), Some(r.as_str()));
    assert_eq!(
        keys(&p),
        [
            format!("PersistentVolumeClaim/team-a/nfs-{r}-data"),
            format!("Service/team-a/nfs-{r}"),
            format!("Secret/team-a/nfs-{r}-writer"),
            format!("StatefulSet/team-a/nfs-{r}"),
            format!("NetworkPolicy/team-a/nfs-{r}"),
            format!("ServiceAccount/team-a/{r}-syncer"),
            format!("Lease/team-a/{r}-syncer"),
            format!("Role/team-a/{r}-syncer"),
            format!("RoleBinding/team-a/{r}-syncer"),
        ]
    );
    assert_eq!(p.status.phase(), Some(Phase::Pending));
    assert_eq!(p.status.condition(condition::NFS_SERVER_READY).map(|c| c.reason.as_str()), Some("Creating"));
}

#[test]
fn a_pod_that_cannot_run_is_named_on_the_condition_that_waits_for_it() {
    let pull = "pod nfs-x-0: container nfs is waiting: ImagePullBackOff: Back-off pulling image \"ghcr.io/sharedvolume/sv-nsf:0.1.0\"";
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.nfs.statefulset_ready = Some(0);
    o.nfs.pod_problem = Some(pull.to_string());
    let p = plan(&o, &settings());
    let nfs = p.status.condition(condition::NFS_SERVER_READY).expect("NfsServerReady");
    assert_eq!((nfs.status.as_str(), nfs.reason.as_str()), ("False", "NotReady"));
    assert!(nfs.message.ends_with(pull), "{}", nfs.message);

    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.syncer_ready = Some(0);
    o.syncer_problem = Some("pod s: container syncer is waiting: CrashLoopBackOff".to_string());
    let p = plan(&o, &settings());
    let synced = p.status.condition(condition::SYNCED).expect("Synced");
    assert_eq!(synced.reason, "Pending");
    assert!(synced.message.ends_with("CrashLoopBackOff"), "{}", synced.message);
}

#[test]
fn serving_volume_gets_storage_and_syncer_and_becomes_preparing() {
    let o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    let p = plan(&o, &settings());
    let r = &p.reference;
    let k = keys(&p);
    assert!(k.contains(&format!("PersistentVolume/{r}")));
    assert!(k.contains(&format!("PersistentVolumeClaim/team-a/{r}")));
    assert!(k.iter().any(|k| k.starts_with(&format!("ReplicaSet/team-a/{r}-syncer-"))), "{k:?}");
    assert_eq!(p.status.phase(), Some(Phase::Preparing));
    assert_eq!(p.status.nfs_server_address.as_deref(), Some("10.96.0.10"));
    let pv = p.objects.iter().find_map(|d| match d {
        Desired::PersistentVolume(pv) => Some(pv),
        _ => None,
    });
    let spec = pv.and_then(|pv| pv.spec.as_ref()).expect("pv spec");
    assert_eq!(spec.nfs.as_ref().map(|n| n.server.as_str()), Some("10.96.0.10"));
    assert_eq!(
        spec.mount_options.as_deref(),
        Some(&["nfsvers=3", "proto=tcp", "port=2049", "mountport=2049", "nolock"].map(String::from)[..])
    );
}

#[test]
fn first_successful_sync_makes_it_ready_and_emits_events() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    let preparing = plan(&o, &settings());
    o.status = preparing.status.clone();
    o.status.sync = Some(SyncStatus {
        last_result: Some(sync_result::SUCCEEDED.to_string()),
        last_sync_time: Some(time(Timestamp::UNIX_EPOCH)),
        revision: Some("etag-1".to_string()),
        observed_generation: Some(1),
        ..SyncStatus::default()
    });
    let ready = plan(&o, &settings());
    assert_eq!(ready.status.phase(), Some(Phase::Ready));
    let reasons: Vec<&str> = ready.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Ready", "Synced"]);

    // Nothing new: no Event.
    o.status = ready.status.clone();
    assert!(plan(&o, &settings()).events.is_empty());
    // The syncer publishes a new revision (it writes `status.sync`; the rest is the operator's):
    // one Synced Event naming it.
    o.status.sync = Some(SyncStatus { revision: Some("etag-2".to_string()), ..o.status.sync.clone().expect("sync") });
    let next = plan(&o, &settings());
    let synced: Vec<&str> = next.events.iter().filter(|e| e.reason == "Synced").map(|e| e.note.as_str()).collect();
    assert_eq!(synced, ["revision etag-2 is published"]);
}

#[test]
fn failed_sync_after_success_keeps_serving() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.status.sync = Some(SyncStatus {
        last_result: Some(sync_result::FAILED.to_string()),
        last_sync_time: Some(time(Timestamp::UNIX_EPOCH)),
        consecutive_failures: Some(3),
        last_error: Some("connection refused".to_string()),
        ..SyncStatus::default()
    });
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Ready));
    let synced = p.status.condition(condition::SYNCED).expect("synced");
    assert_eq!((synced.status.as_str(), synced.reason.as_str()), ("False", "SyncFailed"));
    assert!(synced.message.contains("3 consecutive") && synced.message.contains("connection refused"));
}

#[test]
fn missing_secret_fails_and_names_it() {
    let spec = r#"
mountPath: /opt/mnt/data
storageClassName: standard
storage: {capacity: 1Gi}
source: {git: {url: "https://h/r.git", user: u, passwordFromSecret: {name: creds, key: token}}}
"#;
    let mut o = base_observed(VolumeKind::SharedVolume, spec);
    o.secrets.insert(("team-a".to_string(), "creds".to_string()), Lookup::Missing);
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Failed));
    let message = p.status.message.as_deref().unwrap_or_default();
    assert!(message.contains("Secret team-a/creds not found"), "{message}");
    assert!(keys(&p).iter().all(|k| !k.contains("-syncer")), "no syncer without credentials: {:?}", keys(&p));
    assert!(p.events.iter().any(|e| e.warning && e.reason == "Failed"));

    o.secrets.insert(
        ("team-a".to_string(), "creds".to_string()),
        Lookup::Found(BTreeMap::from([("other".to_string(), ByteString(b"x".to_vec()))])),
    );
    let p = plan(&o, &settings());
    assert!(p.status.message.as_deref().unwrap_or_default().contains("has no key \"token\""));
}

#[test]
fn missing_storage_class_fails_without_creating_the_server() {
    let mut o = base_observed(VolumeKind::SharedVolume, HTTP_SPEC);
    o.storage_class = Lookup::Missing;
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Failed));
    assert!(p.status.message.as_deref().unwrap_or_default().contains("StorageClass standard not found"));
    assert!(!keys(&p).iter().any(|k| k.starts_with("StatefulSet")));
}

#[test]
fn invalid_spec_fails_and_touches_nothing() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.spec.sync_timeout = Some("5m".to_string());
    o.owned =
        BTreeSet::from([ObjectKey { kind: "StatefulSet", namespace: Some("team-a".into()), name: "nfs-x".into() }]);
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Failed));
    assert!(p.status.message.as_deref().unwrap_or_default().contains("spec.syncTimeout"));
    assert!(p.objects.is_empty() && p.delete.is_empty());
}

#[test]
fn credentials_never_reach_status_or_events() {
    let spec = r#"
mountPath: /opt/mnt/data
storageClassName: standard
storage: {capacity: 1Gi}
source: {ssh: {host: h, path: /d, user: u, password: "hunter2-inline"}}
"#;
    let o = serving(base_observed(VolumeKind::SharedVolume, spec));
    let p = plan(&o, &settings());
    let status = serde_json::to_string(&p.status).expect("status serializes");
    assert!(!status.contains("hunter2"));
    assert!(p.events.iter().all(|e| !e.note.contains("hunter2")));
    // The credential goes to the syncer's Secret, and nowhere else.
    let carriers: Vec<String> = p
        .objects
        .iter()
        .filter(|d| serde_json::to_string(d).is_ok_and(|s| s.contains("aHVudGVyMi1pbmxpbmU")))
        .map(|d| d.key().to_string())
        .collect();
    assert_eq!(carriers, [format!("Secret/team-a/{}-credentials", p.reference)]);
}

#[test]
fn consumer_storage_follows_consumer_pods() {
    let mut o = serving(base_observed(VolumeKind::ClusterSharedVolume, HTTP_SPEC));
    let reference = o.reference();
    for ns in ["app-a", "app-b"] {
        o.consumer_pods.push(ConsumerPod { namespace: ns.into(), name: "p".into(), terminating: false, node: None });
        o.namespaces.insert(ns.into(), Some(BTreeMap::from([("team".to_string(), ns.to_string())])));
    }
    let p = plan(&o, &settings());
    for ns in ["app-a", "app-b"] {
        assert!(keys(&p).contains(&format!("PersistentVolumeClaim/{ns}/{reference}-{ns}")));
    }
    assert_eq!(p.status.consumer_namespaces, ["app-a", "app-b"]);

    // app-b's last pod goes: its storage is deleted, app-a's stays.
    o.owned = p.objects.iter().map(Desired::key).collect();
    o.consumer_pods.retain(|c| c.namespace == "app-a");
    let p = plan(&o, &settings());
    let deleted: Vec<String> = p.delete.iter().map(ToString::to_string).collect();
    assert_eq!(
        deleted,
        [format!("PersistentVolume/{reference}-app-b"), format!("PersistentVolumeClaim/app-b/{reference}-app-b")]
    );
}

#[test]
fn a_consumer_claim_younger_than_its_pod_is_not_deleted() {
    // The webhook creates a namespace's claim before the pod is stored: a reconcile in between
    // sees the claim and no consumer pod.
    let mut o = serving(base_observed(VolumeKind::ClusterSharedVolume, HTTP_SPEC));
    let reference = o.reference();
    o.owned.insert(ObjectKey {
        kind: "PersistentVolumeClaim",
        namespace: Some("app-a".into()),
        name: format!("{reference}-app-a"),
    });
    o.young_consumer_claims.insert("app-a".to_string(), std::time::Duration::from_secs(7));
    let p = plan(&o, &settings());
    assert!(p.delete.is_empty(), "deleted {:?}", p.delete);
    assert_eq!(p.requeue_after, std::time::Duration::from_secs(7), "back when the grace ends");
    // Once the grace is over and still no pod came, it is stale.
    o.young_consumer_claims.clear();
    let p = plan(&o, &settings());
    assert_eq!(p.delete.len(), 1, "{:?}", p.delete);
}

#[test]
fn namespace_selector_limits_cluster_volumes() {
    let mut o = serving(base_observed(VolumeKind::ClusterSharedVolume, HTTP_SPEC));
    o.namespace_selector =
        Some(serde_json::from_value(serde_json::json!({"matchLabels": {"sv": "allowed"}})).expect("selector"));
    for (ns, label) in [("good", "allowed"), ("bad", "no")] {
        o.consumer_pods.push(ConsumerPod { namespace: ns.into(), name: "p".into(), terminating: false, node: None });
        o.namespaces.insert(ns.into(), Some(BTreeMap::from([("sv".to_string(), label.to_string())])));
    }
    let p = plan(&o, &settings());
    assert_eq!(p.status.consumer_namespaces, ["good"]);
    assert_eq!(p.status.excluded_namespaces, ["bad"], "the status says which namespaces are left out");
    assert!(p.events.iter().any(|e| e.reason == "NamespaceNotAllowed" && e.note.contains("bad/p")));
    // Reported once, not on every reconcile.
    o.status = p.status.clone();
    assert!(!plan(&o, &settings()).events.iter().any(|e| e.reason == "NamespaceNotAllowed"));
}

#[test]
fn shared_volume_ignores_pods_of_other_namespaces() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.consumer_pods.push(ConsumerPod {
        namespace: "elsewhere".into(),
        name: "p".into(),
        terminating: false,
        node: None,
    });
    let p = plan(&o, &settings());
    assert!(p.status.consumer_namespaces.is_empty());
}

#[test]
fn service_ip_is_pinned_once_known() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.status.nfs_server_address = Some("10.96.0.10".to_string());
    o.nfs.service_ip = None;
    o.nfs.service_exists = false;
    let p = plan(&o, &settings());
    let service = p.objects.iter().find_map(|d| match d {
        Desired::Service(s) => Some(s),
        _ => None,
    });
    let ip = service.and_then(|s| s.spec.as_ref()).and_then(|s| s.cluster_ip.as_deref());
    assert_eq!(ip, Some("10.96.0.10"));
    assert_eq!(p.status.nfs_server_address.as_deref(), Some("10.96.0.10"));
}

#[test]
fn a_changed_syncer_template_is_a_new_replicaset_and_the_old_one_goes() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    let replica_set = |p: &Plan| {
        p.objects
            .iter()
            .find_map(|d| match d {
                Desired::ReplicaSet(rs) => Some(rs.clone()),
                _ => None,
            })
            .expect("a syncer ReplicaSet")
    };
    let before = plan(&o, &settings());
    o.owned = before.objects.iter().map(Desired::key).collect();
    let old = replica_set(&before);
    // The same template: the same ReplicaSet, nothing deleted.
    let again = plan(&o, &settings());
    assert_eq!(replica_set(&again).metadata.name, old.metadata.name);
    assert!(again.delete.is_empty());

    // A new syncer image (the operator upgraded): a new ReplicaSet whose selector cannot take
    // over the old one's pod, and the old ReplicaSet is deleted.
    let upgraded = Settings { syncer_image: "ghcr.io/sharedvolume/sv-syncer:next".to_string(), ..settings() };
    let after = plan(&o, &upgraded);
    let new = replica_set(&after);
    assert_ne!(new.metadata.name, old.metadata.name);
    let selector = |rs: &ReplicaSet| rs.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    let template_labels = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
    };
    assert!(selector(&new).iter().any(|(k, v)| selector(&old).get(k) != Some(v)), "the selectors differ");
    assert!(selector(&old).iter().any(|(k, v)| template_labels(&new).unwrap_or_default().get(k) != Some(v)));
    let deleted: Vec<String> = after.delete.iter().map(ToString::to_string).collect();
    assert_eq!(deleted, [format!("ReplicaSet/team-a/{}", old.metadata.name.clone().unwrap_or_default())]);
}

#[test]
fn the_nfs_policy_admits_the_nodes_of_consumers_and_the_syncer_only() {
    let mut o = serving(base_observed(VolumeKind::ClusterSharedVolume, HTTP_SPEC));
    o.namespace_selector =
        Some(serde_json::from_value(serde_json::json!({"matchLabels": {"sv": "allowed"}})).expect("selector"));
    for (ns, label, node) in [("good", "allowed", "node-1"), ("bad", "no", "node-2")] {
        o.consumer_pods.push(ConsumerPod {
            namespace: ns.into(),
            name: "p".into(),
            terminating: false,
            node: Some(node.into()),
        });
        o.namespaces.insert(ns.into(), Some(BTreeMap::from([("sv".to_string(), label.to_string())])));
    }
    // Not scheduled yet: no node to admit.
    o.consumer_pods.push(ConsumerPod { namespace: "good".into(), name: "q".into(), terminating: false, node: None });
    o.syncer_nodes = BTreeSet::from(["node-3".to_string()]);
    let p = plan(&o, &settings());
    let policy = p
        .objects
        .iter()
        .find_map(|d| match d {
            Desired::NetworkPolicy(np) => Some(np.clone()),
            _ => None,
        })
        .expect("a NetworkPolicy");
    let peers = policy.spec.and_then(|s| s.ingress).and_then(|i| i.into_iter().next()).and_then(|r| r.from);
    let cidrs: Vec<String> = peers.into_iter().flatten().filter_map(|p| p.ip_block).map(|b| b.cidr).collect();
    // The allowed consumer's node and the syncer's node; not the excluded namespace's node, and
    // not every node of the cluster.
    assert_eq!(cidrs, ["172.18.0.2/32", "172.18.0.4/32"]);
}

#[test]
fn removing_the_source_removes_the_syncer() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    let with_source = plan(&o, &settings());
    o.owned = with_source.objects.iter().map(Desired::key).collect();
    o.spec.source = None;
    let p = plan(&o, &settings());
    let deleted: Vec<&str> = p.delete.iter().map(|k| k.kind).collect();
    // The syncer's pods stop first, with their Lease, Role and ServiceAccount still there.
    assert_eq!(deleted, ["ReplicaSet"]);
    o.owned.retain(|k| k.kind != "ReplicaSet");
    let p = plan(&o, &settings());
    let deleted: Vec<&str> = p.delete.iter().map(|k| k.kind).collect();
    assert_eq!(deleted, ["Lease", "Role", "RoleBinding", "ServiceAccount"]);
}

#[test]
fn deletion_waits_for_consumer_pods_then_cleans_up() {
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    o.consumer_pods.push(ConsumerPod {
        namespace: "team-a".into(),
        name: "reader".into(),
        terminating: false,
        node: None,
    });
    o.namespaces.insert("team-a".into(), Some(BTreeMap::new()));
    let live = plan(&o, &settings());
    o.owned = live.objects.iter().map(Desired::key).collect();
    o.status = live.status;
    o.deleting = true;

    let blocked = plan(&o, &settings());
    assert!(blocked.delete.is_empty() && !blocked.finalize);
    assert_eq!(blocked.status.blocking_pods, ["team-a/reader"]);
    assert!(blocked.status.message.as_deref().unwrap_or_default().contains("team-a/reader"));
    assert_eq!(blocked.status.condition(condition::READY).map(|c| c.reason.as_str()), Some("Deleting"));

    o.consumer_pods.clear();
    let cleanup = plan(&o, &settings());
    let workloads = o.owned.iter().filter(|k| WORKLOAD_KINDS.contains(&k.kind)).count();
    assert_eq!((cleanup.delete.len(), workloads), (2, 2), "the StatefulSet and the ReplicaSet go first");
    assert!(!cleanup.finalize);
    o.owned.retain(|k| !WORKLOAD_KINDS.contains(&k.kind));
    let rest = plan(&o, &settings());
    assert_eq!(rest.delete.len(), o.owned.len(), "then everything else");
    assert!(!rest.finalize);

    o.owned.clear();
    assert!(plan(&o, &settings()).finalize);
}

#[test]
fn condition_transition_time_is_kept_when_status_does_not_flip() {
    let mut conditions = Vec::new();
    let t0 = Timestamp::UNIX_EPOCH;
    let t1 = Timestamp::from_second(100).expect("valid time");
    set_condition(&mut conditions, "Ready", false, "Pending", "a", Some(1), t0);
    set_condition(&mut conditions, "Ready", false, "Pending", "b", Some(2), t1);
    assert_eq!(conditions[0].last_transition_time.0, t0);
    assert_eq!(conditions[0].message, "b");
    set_condition(&mut conditions, "Ready", true, "Ready", "c", Some(2), t1);
    assert_eq!(conditions[0].last_transition_time.0, t1);
}

#[test]
fn external_url_needs_no_server_objects() {
    let spec = r#"
mountPath: /opt/mnt/data
storage: {capacity: 1Gi}
nfsServer: {url: nfs.example.com, path: /exports}
"#;
    let mut o = base_observed(VolumeKind::SharedVolume, spec);
    o.annotations.insert(MOUNT_OPTIONS_ANNOTATION.to_string(), "nfsvers=4.1, hard".to_string());
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Ready));
    assert!(keys(&p).iter().all(|k| k.starts_with("Persistent")), "{:?}", keys(&p));
    let pv = p.objects.iter().find_map(|d| match d {
        Desired::PersistentVolume(pv) => pv.spec.clone(),
        _ => None,
    });
    let pv = pv.expect("pv");
    assert_eq!(pv.mount_options, Some(vec!["nfsvers=4.1".to_string(), "hard".to_string()]));
    assert_eq!(pv.nfs.map(|n| (n.server, n.path)), Some(("nfs.example.com".to_string(), "/exports".to_string())));
}

// --- properties ---------------------------------------------------------------------------------

fn spec_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(HTTP_SPEC.to_string()),
        Just("mountPath: /m\nstorageClassName: standard\nstorage: {capacity: 2Gi, accessMode: ReadWrite}\n".to_string()),
        Just("mountPath: /m\nstorage: {capacity: 1Gi}\nnfsServer: {url: 10.0.0.1}\nsource: {git: {url: 'https://h/r.git'}}\n".to_string()),
        Just("mountPath: /m\nstorage: {capacity: 1Gi}\nnfsServer: {name: nfs-x, namespace: st}\n".to_string()),
        Just("mountPath: /m\nstorageClassName: standard\nstorage: {capacity: 1Gi}\nsource: {s3: {endpointUrl: 'https://s3', bucketName: bkt, region: r, accessKeyFromSecret: {name: s3, key: a, namespace: default}, secretKeyFromSecret: {name: s3, key: s, namespace: default}}}\n".to_string()),
        Just("mountPath: /m\nstorageClassName: standard\nstorage: {capacity: 1Gi}\nsource: {ssh: {host: h, path: /d, password: pw}}\nsyncInterval: 1m\nsyncTimeout: 2m\n".to_string()),
    ]
}

prop_compose! {
    fn observed_strategy()(
        spec in spec_strategy(),
        cluster in any::<bool>(),
        sts in prop::option::of(0i32..2),
        ip in prop::option::of(Just("10.96.0.7".to_string())),
        recorded_ip in prop::option::of(Just("10.96.0.7".to_string())),
        syncer in prop::option::of(0i32..2),
        secret_found in any::<bool>(),
        storage_class in any::<bool>(),
        external_service in prop::option::of(prop::option::of(Just("10.96.1.1".to_string()))),
        sync in prop::option::of((any::<bool>(), any::<bool>(), 0i64..3)),
        pods in prop::collection::vec((0usize..3, any::<bool>()), 0..4),
        deleting in any::<bool>(),
        stale in prop::collection::vec(0usize..3, 0..3),
        reference_set in any::<bool>(),
    ) -> Observed {
        let kind = if cluster { VolumeKind::ClusterSharedVolume } else { VolumeKind::SharedVolume };
        let mut o = base_observed(kind, &spec);
        if reference_set {
            o.spec.reference_value = Some(o.reference());
        }
        o.nfs = NfsObserved {
            statefulset_ready: sts,
            service_exists: ip.is_some(),
            service_ip: ip,
            data_claim_phase: None,
            writer_token: sts.map(|_| TEST_WRITER_TOKEN.to_string()),
            new_writer_token: Some(TEST_WRITER_TOKEN.to_string()),
            pod_problem: None,
        };
        o.status.nfs_server_address = recorded_ip;
        o.syncer_ready = syncer;
        o.storage_class = if storage_class { Lookup::Found(()) } else { Lookup::Missing };
        o.external_service = match external_service {
            Some(ip) => Lookup::Found(ip),
            None => Lookup::Missing,
        };
        for location in o.referenced_secrets() {
            let data = BTreeMap::from([
                ("a".to_string(), ByteString(b"AKIA".to_vec())),
                ("s".to_string(), ByteString(b"secret".to_vec())),
            ]);
            o.secrets.insert(location, if secret_found { Lookup::Found(data) } else { Lookup::Missing });
        }
        if let Some((ok, published, generation)) = sync {
            o.status.sync = Some(SyncStatus {
                last_result: Some(if ok { sync_result::SUCCEEDED } else { sync_result::FAILED }.to_string()),
                last_sync_time: published.then(|| time(Timestamp::UNIX_EPOCH)),
                observed_generation: Some(generation),
                ..SyncStatus::default()
            });
        }
        let namespaces = ["team-a", "app-b", "app-c"];
        for (i, terminating) in pods {
            let ns = namespaces[i];
            o.consumer_pods.push(ConsumerPod { namespace: ns.into(), name: format!("p{i}"), terminating, node: None });
            o.namespaces.insert(ns.into(), Some(BTreeMap::new()));
        }
        o.consumer_pods.sort();
        o.consumer_pods.dedup();
        let names = ChildNames::new(o.reference());
        for i in stale {
            let ns = format!("gone-{i}");
            o.owned.insert(ObjectKey { kind: "PersistentVolumeClaim", namespace: Some(ns.clone()), name: names.consumer_storage(&ns) });
        }
        o.deleting = deleting;
        o
    }
}

/// What the cluster looks like after a plan is carried out: its objects exist, its deletions are
/// gone, its status and reference value are written.
fn absorb(mut o: Observed, p: &Plan) -> Observed {
    for key in &p.delete {
        o.owned.remove(key);
    }
    o.owned.extend(p.objects.iter().map(Desired::key));
    o.status = p.status.clone();
    if let Some(reference) = &p.set_reference_value {
        o.spec.reference_value = Some(reference.clone());
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planning_is_deterministic(o in observed_strategy()) {
        let s = settings();
        prop_assert_eq!(plan(&o, &s), plan(&o.clone(), &s));
    }

    #[test]
    fn applying_a_plan_to_its_own_output_changes_nothing(o in observed_strategy()) {
        let s = settings();
        let first = plan(&o, &s);
        let after = absorb(o, &first);
        let second = plan(&after, &s);
        if after.deleting {
            // A deleting volume creates nothing, and converges: carrying out its plans leaves
            // nothing it created and removes the finalizer within two rounds — unless consumer
            // pods still mount it, when nothing is deleted at all.
            prop_assert!(first.objects.is_empty() && second.objects.is_empty());
            let blocked = !after.consumer_pods.is_empty();
            let (mut state, mut next) = (after, second);
            for _ in 0..2 {
                if next.finalize {
                    break;
                }
                state = absorb(state, &next);
                next = plan(&state, &s);
            }
            if blocked {
                prop_assert!(next.delete.is_empty() && !next.finalize, "consumer pods block the cleanup");
            } else {
                prop_assert!(next.finalize, "still owned after two rounds: {:?}", state.owned);
                prop_assert!(state.owned.is_empty());
            }
        } else {
            prop_assert_eq!(&second.objects, &first.objects);
            prop_assert!(second.delete.is_empty(), "second plan deletes {:?}", second.delete);
            prop_assert_eq!(&second.status, &first.status);
            prop_assert_eq!(second.set_reference_value, None);
            prop_assert!(second.events.is_empty(), "second plan emits {:?}", second.events);
        }
    }

    #[test]
    fn planned_names_are_valid(o in observed_strategy()) {
        let p = plan(&o, &settings());
        for object in &p.objects {
            let key = object.key();
            prop_assert!(is_dns1123_label(&key.name), "{}", key);
        }
    }
}

/// The syncer mounts the server's writer path, which a PV can never change, so its PV waits until
/// the token is stored; consumers mount `/`; the server gets the token and the identity policy.
#[test]
fn the_syncer_mounts_the_writer_path_once_the_token_is_stored() {
    let mut o = base_observed(VolumeKind::SharedVolume, HTTP_SPEC);
    o.nfs.service_ip = Some("10.96.0.10".to_string());
    o.nfs.service_exists = true;
    let p = plan(&o, &settings());
    let r = p.reference.clone();
    let syncer_pv = format!("PersistentVolume/{r}");
    assert!(!keys(&p).contains(&syncer_pv), "no syncer PV before the token is stored: {:?}", keys(&p));
    let secret = p.objects.iter().find_map(|d| match d {
        Desired::Secret(s) if s.metadata.name.as_deref() == Some(&format!("nfs-{r}-writer")) => Some(s.clone()),
        _ => None,
    });
    let token = secret.and_then(|s| s.data).and_then(|d| d.get("token").cloned()).expect("the writer Secret");
    assert_eq!(token.0, TEST_WRITER_TOKEN.as_bytes());

    o.nfs.writer_token = Some(TEST_WRITER_TOKEN.to_string());
    o.nfs.new_writer_token = None;
    o.consumer_pods.push(ConsumerPod {
        namespace: "team-a".to_string(),
        name: "reader".to_string(),
        terminating: false,
        node: None,
    });
    o.namespaces.insert("team-a".to_string(), Some(BTreeMap::new()));
    let p = plan(&o, &settings());
    let path_of = |name: &str| {
        p.objects.iter().find_map(|d| match d {
            Desired::PersistentVolume(pv) if pv.metadata.name.as_deref() == Some(name) => {
                pv.spec.as_ref().and_then(|s| s.nfs.as_ref()).map(|n| n.path.clone())
            }
            _ => None,
        })
    };
    assert_eq!(path_of(&r), Some(format!("/.sv-writer-{TEST_WRITER_TOKEN}")));
    assert_eq!(path_of(&format!("{r}-team-a")), Some("/".to_string()));
    let args = p
        .objects
        .iter()
        .find_map(|d| match d {
            Desired::StatefulSet(s) => s.spec.as_ref()?.template.spec.as_ref()?.containers[0].args.clone(),
            _ => None,
        })
        .expect("server args");
    for flag in [
        "--squash=root",
        "--anon-uid=65534",
        "--writer-token-file=/etc/sv-nfs/writer/token",
        "--consumer-access=read-only",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
    }
}

#[test]
fn a_bad_identity_annotation_is_a_validation_error() {
    let mut o = base_observed(VolumeKind::SharedVolume, HTTP_SPEC);
    o.annotations.insert(crate::plan::NFS_SQUASH_ANNOTATION.to_string(), "sometimes".to_string());
    let p = plan(&o, &settings());
    assert_eq!(p.status.phase(), Some(Phase::Failed));
    assert!(p.status.message.as_deref().unwrap_or_default().contains("nfs-squash"), "{:?}", p.status.message);
    assert!(p.objects.is_empty(), "nothing is created for an invalid volume");
}

/// The syncer's memory limit is 512Mi unless the volume's annotation sets another; a new limit
/// is a new syncer ReplicaSet; a limit that is no quantity, or too small, fails the volume
/// naming the annotation.
#[test]
fn the_syncer_memory_limit_follows_the_volume_annotation() {
    let limit = |p: &Plan| {
        p.objects.iter().find_map(|d| match d {
            Desired::ReplicaSet(rs) => rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("memory"))
                .map(|q| q.0.clone()),
            _ => None,
        })
    };
    let mut o = serving(base_observed(VolumeKind::SharedVolume, HTTP_SPEC));
    assert_eq!(limit(&plan(&o, &settings())).as_deref(), Some("512Mi"));
    o.annotations.insert(sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION.to_string(), "2Gi".to_string());
    assert_eq!(limit(&plan(&o, &settings())).as_deref(), Some("2Gi"));
    for bad in ["lots", "16Mi"] {
        o.annotations.insert(sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION.to_string(), bad.to_string());
        let p = plan(&o, &settings());
        assert_eq!(p.status.phase(), Some(Phase::Failed), "{bad}");
        let message = p.status.message.clone().unwrap_or_default();
        assert!(message.contains(sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION), "{bad}: {message}");
    }
}
