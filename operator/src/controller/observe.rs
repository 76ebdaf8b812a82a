//! Reading the cluster into an [`Observed`]: the one place the reconciler looks at the world.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use super::Error;
use super::kube_io::{OWNED_KINDS, api_resource, list_keys};
use crate::api::{Volume, VolumeKind, components, labels, pod_requested_volumes};
use crate::clock::SharedClock;
use crate::names::{ChildNames, NFS_WRITER_TOKEN_KEY, is_valid_writer_token};
use crate::plan::{ConsumerPod, Lookup, NfsObserved, Observed, Settings};
use crate::validation::{ServerMode, server_mode};

/// What `observe` reads from besides the API: the reflector caches of consumer pods and nodes.
pub struct Caches {
    /// Consumer pods (the webhook's label).
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    /// Syncer pods of every volume.
    pub syncer_pods: Store<Pod>,
}

async fn get_opt<K>(api: Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?)
}

/// Builds the observation of one volume.
pub async fn observe<V: Volume>(
    client: &Client,
    volume: &V,
    caches: &Caches,
    settings: &Settings,
    clock: &SharedClock,
) -> Result<Observed, Error> {
    let name = volume.name_any();
    let mut o = Observed::new(
        V::KIND,
        &name,
        volume.namespace().as_deref(),
        volume.uid().as_deref().unwrap_or_default(),
        volume.volume_spec().clone(),
    );
    o.generation = volume.meta().generation;
    o.annotations = volume.annotations().clone();
    o.namespace_selector = volume.namespace_selector().cloned();
    o.status = volume.volume_status().cloned().unwrap_or_default();
    o.deleting = volume.meta().deletion_timestamp.is_some();
    o.now = clock.now();

    let resource_ns = o.resource_namespace(settings);
    let names = ChildNames::new(o.reference());
    o.resource_namespace = match get_opt(Api::<Namespace>::all(client.clone()), &resource_ns).await? {
        Some(ns) if ns.meta().deletion_timestamp.is_none() => Lookup::Found(()),
        _ => Lookup::Missing,
    };

    match server_mode(&o.spec) {
        ServerMode::Managed { .. } => {
            if let Some(class) = o.spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
                o.storage_class = match get_opt(Api::<StorageClass>::all(client.clone()), class).await? {
                    Some(_) => Lookup::Found(()),
                    None => Lookup::Missing,
                };
            }
            let sts =
                get_opt(Api::<StatefulSet>::namespaced(client.clone(), &resource_ns), &names.nfs_server()).await?;
            let svc = get_opt(Api::<Service>::namespaced(client.clone(), &resource_ns), &names.nfs_server()).await?;
            let claim = get_opt(
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), &resource_ns),
                &names.nfs_data_claim(),
            )
            .await?;
            let writer = get_opt(Api::<Secret>::namespaced(client.clone(), &resource_ns), &names.nfs_writer()).await?;
            let writer_token = writer
                .and_then(|s| s.data)
                .and_then(|d| d.get(NFS_WRITER_TOKEN_KEY).cloned())
                .and_then(|b| String::from_utf8(b.0).ok())
                .filter(|t| is_valid_writer_token(t));
            o.nfs = NfsObserved {
                statefulset_ready: sts.map(|s| s.status.and_then(|st| st.ready_replicas).unwrap_or(0)),
                service_exists: svc.is_some(),
                service_ip: svc.as_ref().and_then(cluster_ip),
                data_claim_phase: claim.and_then(|c| c.status).and_then(|s| s.phase),
                new_writer_token: if writer_token.is_none() { Some(new_writer_token()?) } else { None },
                writer_token,
            };
        }
        ServerMode::ExternalService { name: svc_name, namespace, .. } => {
            let ns = namespace.unwrap_or_else(|| resource_ns.clone());
            let svc = get_opt(Api::<Service>::namespaced(client.clone(), &ns), &svc_name).await?;
            o.external_service = match svc {
                Some(s) => Lookup::Found(cluster_ip(&s)),
                None => Lookup::Missing,
            };
        }
        ServerMode::ExternalUrl { .. } => {}
    }

    for (ns, secret_name) in o.referenced_secrets() {
        let secret = get_opt(Api::<Secret>::namespaced(client.clone(), &ns), &secret_name).await?;
        let lookup = match secret {
            Some(s) => Lookup::Found(s.data.unwrap_or_default()),
            None => Lookup::Missing,
        };
        o.secrets.insert((ns, secret_name), lookup);
    }

    // One ReplicaSet per pod template (named after its hash); while one replaces another, the
    // syncer is ready if either's pod is.
    let syncers = format!("{}={},{}={}", labels::REFERENCE, names.reference(), labels::COMPONENT, components::SYNCER);
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &resource_ns)
        .list(&kube::api::ListParams::default().labels(&syncers))
        .await?;
    o.syncer_ready =
        replica_sets.items.iter().map(|r| r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)).max();

    o.consumer_pods = consumer_pods(&caches.pods, V::KIND, &name, o.namespace.as_deref());
    let consumer_ns: BTreeSet<String> = o.consumer_pods.iter().map(|p| p.namespace.clone()).collect();
    for ns in consumer_ns {
        let labels = match get_opt(Api::<Namespace>::all(client.clone()), &ns).await? {
            Some(n) if n.meta().deletion_timestamp.is_none() => Some(n.labels().clone()),
            _ => None,
        };
        o.namespaces.insert(ns, labels);
    }

    let selector = format!("{}={}", labels::REFERENCE, names.reference());
    for kind in OWNED_KINDS {
        let namespaced = api_resource(kind).is_some_and(|(_, namespaced)| namespaced);
        // Consumer PVCs live in consumer namespaces; everything else namespaced in the resource one.
        let scope = match (namespaced, kind) {
            (false, _) | (true, "PersistentVolumeClaim") => None,
            (true, _) => Some(resource_ns.as_str()),
        };
        o.owned.extend(list_keys(client, kind, scope, &selector).await?);
    }

    o.node_addresses = node_addresses(&caches.nodes);
    o.syncer_nodes = syncer_nodes(&caches.syncer_pods, names.reference());
    Ok(o)
}

fn cluster_ip(service: &Service) -> Option<String> {
    service.spec.as_ref().and_then(|s| s.cluster_ip.clone()).filter(|ip| !ip.is_empty() && ip != "None")
}

/// Pods (from the consumer-pod cache) whose annotations ask for this volume. A SharedVolume is
/// only visible to pods of its own namespace.
pub fn consumer_pods(pods: &Store<Pod>, kind: VolumeKind, name: &str, namespace: Option<&str>) -> Vec<ConsumerPod> {
    let mut out: Vec<ConsumerPod> = pods
        .state()
        .iter()
        .filter(|pod| {
            let pod_ns = pod.namespace();
            let in_scope = match kind {
                VolumeKind::SharedVolume => pod_ns.as_deref() == namespace,
                VolumeKind::ClusterSharedVolume => true,
            };
            in_scope && pod_requested_volumes(pod.annotations(), kind).iter().any(|n| n == name)
        })
        .filter(|pod| !is_finished(pod))
        .map(|pod| ConsumerPod {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            terminating: pod.meta().deletion_timestamp.is_some(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        })
        .collect();
    out.sort();
    out
}

/// A pod that ran to completion no longer holds a mount.
fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// InternalIP addresses of all nodes.
/// InternalIP addresses of every node, by node name.
pub fn node_addresses(nodes: &Store<Node>) -> BTreeMap<String, BTreeSet<String>> {
    nodes
        .state()
        .iter()
        .map(|n| {
            let addresses = n
                .status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect();
            (n.name_any(), addresses)
        })
        .collect()
}

/// Nodes the syncer pods of the volume with `reference` are scheduled to.
pub fn syncer_nodes(syncer_pods: &Store<Pod>, reference: &str) -> BTreeSet<String> {
    syncer_pods
        .state()
        .iter()
        .filter(|pod| pod.labels().get(labels::REFERENCE).map(String::as_str) == Some(reference))
        .filter(|pod| !is_finished(pod))
        .filter_map(|pod| pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
}

/// Names of volumes of `kind` a pod asks for, as reconcile keys: (namespace, name).
pub fn requested_by_pod(pod: &Pod, kind: VolumeKind) -> Vec<(Option<String>, String)> {
    let namespace = match kind {
        VolumeKind::SharedVolume => pod.namespace(),
        VolumeKind::ClusterSharedVolume => None,
    };
    pod_requested_volumes(pod.annotations(), kind).into_iter().map(|n| (namespace.clone(), n)).collect()
}

/// A fresh writer token: 128 bits from the OS, as 32 hex digits.
pub fn new_writer_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
