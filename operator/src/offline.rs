//! Planning without a cluster: observations built from manifests alone. Used by `sv-operator plan`
//! and by the snapshot tests of the examples.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{SyncStatus, Volume, VolumeKind, VolumeStatus, pod_requested_volumes, sync_result};
use crate::manifests::Manifest;
use crate::plan::{ConsumerPod, Lookup, NfsObserved, Observed, Settings};

/// The cluster a set of manifests describes: its volumes, Secrets and pods, one node, and a
/// StorageClass named `standard`.
#[derive(Clone, Debug, Default)]
pub struct OfflineCluster {
    pub volumes: Vec<OfflineVolume>,
    pub secrets: Vec<Secret>,
    pub pods: Vec<Pod>,
    /// Namespace of objects that name none (as `kubectl apply` without `-n`).
    pub default_namespace: String,
}

/// A volume from a manifest, with the metadata the API server would have added.
#[derive(Clone, Debug)]
pub struct OfflineVolume {
    pub kind: VolumeKind,
    pub name: String,
    pub namespace: Option<String>,
    pub observed: Observed,
}

/// How far the simulated cluster has come for a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Just created: nothing exists yet.
    Fresh,
    /// The NFS server runs, the syncer runs and (with a source) one sync succeeded.
    Serving,
}

const NODE: &str = "node-1";
const NODE_ADDRESS: &str = "172.18.0.2";
const SERVICE_IP: &str = "10.96.0.10";
/// Stands in for the writer token, which only a running operator issues. It is not a valid token
/// on purpose: an NFS server given objects printed offline refuses to start rather than serve a
/// writer path everybody can read here.
const OFFLINE_WRITER_TOKEN: &str = "issued-by-the-operator";
const EXTERNAL_SERVICE_IP: &str = "10.96.0.20";

impl OfflineCluster {
    pub fn from_manifests(manifests: impl IntoIterator<Item = Manifest>) -> Self {
        let mut cluster = OfflineCluster { default_namespace: "default".to_string(), ..Default::default() };
        let mut uid = 0u32;
        let mut next_uid = || {
            uid += 1;
            format!("00000000-0000-4000-8000-{uid:012}")
        };
        for manifest in manifests {
            match manifest {
                Manifest::SharedVolume(sv) => {
                    let namespace = sv.namespace().unwrap_or_else(|| cluster.default_namespace.clone());
                    cluster.add_volume(sv.as_ref(), Some(namespace), next_uid());
                }
                Manifest::ClusterSharedVolume(csv) => cluster.add_volume(csv.as_ref(), None, next_uid()),
                Manifest::Secret(mut secret) => {
                    secret.metadata.namespace.get_or_insert_with(|| cluster.default_namespace.clone());
                    cluster.secrets.push(*secret);
                }
                Manifest::Pod(mut pod) => {
                    pod.metadata.namespace.get_or_insert_with(|| cluster.default_namespace.clone());
                    cluster.pods.push(*pod);
                }
                Manifest::Other { .. } => {}
            }
        }
        cluster
    }

    fn add_volume<V: Volume>(&mut self, volume: &V, namespace: Option<String>, uid: String) {
        let name = volume.name_any();
        let mut observed = Observed::new(V::KIND, &name, namespace.as_deref(), &uid, volume.volume_spec().clone());
        observed.annotations = volume.annotations().clone();
        observed.namespace_selector = volume.namespace_selector().cloned();
        observed.now = Timestamp::UNIX_EPOCH;
        self.volumes.push(OfflineVolume { kind: V::KIND, name, namespace, observed });
    }

    /// What the operator would observe for `volume` at `stage`.
    pub fn observe(&self, volume: &OfflineVolume, stage: Stage, settings: &Settings) -> Observed {
        let mut o = volume.observed.clone();
        o.storage_class =
            if o.spec.storage_class_name.as_deref() == Some("standard") { Lookup::Found(()) } else { Lookup::Missing };
        for (ns, name) in o.referenced_secrets() {
            let found =
                self.secrets.iter().find(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.name_any() == name);
            let lookup = match found {
                Some(secret) => {
                    Lookup::Found(crate::manifests::normalize_secret(secret.clone()).data.unwrap_or_default())
                }
                None => Lookup::Missing,
            };
            o.secrets.insert((ns, name), lookup);
        }
        o.external_service = Lookup::Found(Some(EXTERNAL_SERVICE_IP.to_string()));
        o.node_addresses = BTreeMap::from([(NODE.to_string(), BTreeSet::from([NODE_ADDRESS.to_string()]))]);
        for pod in &self.pods {
            let pod_ns = pod.namespace().unwrap_or_default();
            let same_scope = match volume.kind {
                VolumeKind::SharedVolume => volume.namespace.as_deref() == Some(pod_ns.as_str()),
                VolumeKind::ClusterSharedVolume => true,
            };
            if same_scope && pod_requested_volumes(pod.annotations(), volume.kind).contains(&volume.name) {
                o.consumer_pods.push(ConsumerPod {
                    namespace: pod_ns.clone(),
                    name: pod.name_any(),
                    terminating: false,
                    node: Some(NODE.to_string()),
                });
                o.namespaces.insert(
                    pod_ns.clone(),
                    Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), pod_ns)])),
                );
            }
        }
        o.consumer_pods.sort();
        if stage == Stage::Serving {
            o.spec.reference_value = Some(o.reference());
            o.nfs = NfsObserved {
                statefulset_ready: Some(1),
                service_ip: Some(SERVICE_IP.to_string()),
                service_exists: true,
                data_claim_phase: Some("Bound".to_string()),
                writer_token: Some(OFFLINE_WRITER_TOKEN.to_string()),
                new_writer_token: None,
                pod_problem: None,
            };
            o.syncer_ready = Some(1);
            if o.spec.has_source() {
                o.syncer_nodes = BTreeSet::from([NODE.to_string()]);
            }
            if o.spec.has_source() {
                let now = Timestamp::UNIX_EPOCH;
                o.status.sync = Some(SyncStatus {
                    last_result: Some(sync_result::SUCCEEDED.to_string()),
                    last_attempt_time: Some(crate::plan::time(now)),
                    last_sync_time: Some(crate::plan::time(now)),
                    revision: Some("0123456789abcdef".to_string()),
                    last_duration: Some("1.5s".to_string()),
                    consecutive_failures: Some(0),
                    files: Some(3),
                    bytes: Some(4096),
                    observed_generation: o.generation,
                    ..SyncStatus::default()
                });
            }
            let fresh = crate::plan::plan(&self.observe(volume, Stage::Fresh, settings), settings);
            o.status = VolumeStatus { sync: o.status.sync.take(), ..fresh.status };
            o.owned = fresh.objects.iter().map(|d| d.key()).collect();
        }
        o
    }
}
