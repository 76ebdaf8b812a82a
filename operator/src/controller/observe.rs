//! Reading the cluster into an [`Observed`]: the one place the reconciler looks at the world.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use super::Error;
use super::cache::ClusterCache;
use super::kube_io::{OWNED_KINDS, api_resource, list_keys};
use crate::api::{Volume, VolumeKind, components, labels, pod_requested_volumes};
use crate::clock::SharedClock;
use crate::names::{ChildNames, NFS_WRITER_TOKEN_KEY, is_valid_writer_token};
use crate::plan::{ConsumerPod, Lookup, NfsObserved, ObjectKey, Observed, Settings};
use crate::validation::{ServerMode, server_mode};

/// What `observe` reads from besides the API: the reflector caches of consumer pods and nodes.
pub struct Caches {
    /// Consumer pods (the webhook's label).
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    /// Syncer and NFS server pods of every volume.
    pub own_pods: Store<Pod>,
    /// Namespaces, StorageClasses and everything the operator created.
    pub cluster: ClusterCache,
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
    let cache = &caches.cluster;
    o.resource_namespace =
        if cache.live_namespace(&resource_ns).await?.is_some() { Lookup::Found(()) } else { Lookup::Missing };
    let child = |kind: &'static str, name: String| {
        cache.owned(&ObjectKey { kind, namespace: Some(resource_ns.clone()), name }).map(|o| o.view.clone())
    };

    match server_mode(&o.spec) {
        ServerMode::Managed { .. } => {
            if let Some(class) = o.spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
                o.storage_class =
                    if cache.storage_class_exists(class).await? { Lookup::Found(()) } else { Lookup::Missing };
            }
            let sts = child("StatefulSet", names.nfs_server());
            let svc = child("Service", names.nfs_server());
            let claim = child("PersistentVolumeClaim", names.nfs_data_claim());
            // Read through on a miss: a writer Secret written a moment ago and not yet in the cache
            // must not make the operator draw a second token.
            let writer_key =
                ObjectKey { kind: "Secret", namespace: Some(resource_ns.clone()), name: names.nfs_writer() };
            let writer = cache.owned_or_fetched(&writer_key).await?;
            let writer_token = writer
                .as_ref()
                .and_then(|w| w["data"][NFS_WRITER_TOKEN_KEY].as_str())
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|t| is_valid_writer_token(t));
            let service_ip = svc
                .as_ref()
                .and_then(|s| s["spec"]["clusterIP"].as_str())
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .map(str::to_string);
            o.nfs = NfsObserved {
                statefulset_ready: sts.map(|s| s["status"]["readyReplicas"].as_i64().unwrap_or(0) as i32),
                service_exists: svc.is_some(),
                service_ip,
                data_claim_phase: claim.and_then(|c| c["status"]["phase"].as_str().map(str::to_string)),
                new_writer_token: if writer_token.is_none() { Some(new_writer_token()?) } else { None },
                writer_token,
                pod_problem: waiting_pod(&caches.own_pods, names.reference(), components::NFS_SERVER),
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
    let reference = names.reference();
    let syncers = BTreeMap::from([(labels::COMPONENT, components::SYNCER)]);
    o.syncer_ready = cache
        .owned_keys(reference, &syncers)
        .into_iter()
        .filter(|k| k.kind == "ReplicaSet")
        .filter_map(|k| cache.owned(&k))
        .map(|rs| rs.view["status"]["readyReplicas"].as_i64().unwrap_or(0) as i32)
        .max();

    o.consumer_pods = consumer_pods(&caches.pods, V::KIND, &name, o.namespace.as_deref());
    let consumer_ns: BTreeSet<String> = o.consumer_pods.iter().map(|p| p.namespace.clone()).collect();
    for ns in consumer_ns {
        let labels = cache.live_namespace(&ns).await?.map(|n| n.labels().clone());
        o.namespaces.insert(ns, labels);
    }

    o.owned = if o.deleting {
        // What is left decides when the finalizer goes: asked of the API server, not a cache
        // that may still hold something just deleted.
        let selector = format!("{}={}", labels::REFERENCE, reference);
        let mut owned = BTreeSet::new();
        for kind in OWNED_KINDS {
            let namespaced = api_resource(kind).is_some_and(|(_, namespaced)| namespaced);
            // Consumer PVCs live in consumer namespaces; the rest namespaced in the resource one.
            let scope = match (namespaced, kind) {
                (false, _) | (true, "PersistentVolumeClaim") => None,
                (true, _) => Some(resource_ns.as_str()),
            };
            owned.extend(list_keys(client, kind, scope, &selector).await?);
        }
        owned
    } else {
        cache.owned_keys(reference, &BTreeMap::new())
    };

    // Consumer claims of this volume created moments ago (their pods may not be in the pod cache
    // yet): kept for a grace period even without a consumer pod in sight.
    let consumer_claims = BTreeMap::from([(labels::COMPONENT, components::CONSUMER_STORAGE)]);
    for key in cache.owned_keys(reference, &consumer_claims).into_iter().filter(|k| k.kind == "PersistentVolumeClaim") {
        let Some(claim) = cache.owned(&key) else { continue };
        let Some(created) = claim.metadata.creation_timestamp.as_ref().map(|t| t.0) else { continue };
        let age = o.now.duration_since(created).unsigned_abs();
        if let (Some(ns), Some(left)) = (key.namespace, crate::plan::CONSUMER_CLAIM_GRACE.checked_sub(age)) {
            o.young_consumer_claims.insert(ns, left.max(std::time::Duration::from_secs(1)));
        }
    }

    o.node_addresses = node_addresses(&caches.nodes);
    o.syncer_nodes = syncer_nodes(&caches.own_pods, names.reference());
    o.syncer_problem = waiting_pod(&caches.own_pods, names.reference(), components::SYNCER);
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
pub fn syncer_nodes(own_pods: &Store<Pod>, reference: &str) -> BTreeSet<String> {
    own_pods
        .state()
        .iter()
        .filter(|pod| pod.labels().get(labels::REFERENCE).map(String::as_str) == Some(reference))
        .filter(|pod| pod.labels().get(labels::COMPONENT).map(String::as_str) == Some(components::SYNCER))
        .filter(|pod| !is_finished(pod))
        .filter_map(|pod| pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
}

/// Why a `component` pod of the volume `reference` cannot run, when one of its containers waits
/// for a reason other than starting up (`ImagePullBackOff`, `CrashLoopBackOff`,
/// `CreateContainerConfigError`): `pod P: container C is waiting: REASON: MESSAGE`.
pub fn waiting_pod(own_pods: &Store<Pod>, reference: &str, component: &str) -> Option<String> {
    const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];
    // The cache holds every volume's pods: pick this volume's before ordering them.
    let (mut pods, terminating): (Vec<_>, Vec<_>) = own_pods
        .state()
        .into_iter()
        .filter(|pod| pod.labels().get(labels::REFERENCE).map(String::as_str) == Some(reference))
        .filter(|pod| pod.labels().get(labels::COMPONENT).map(String::as_str) == Some(component))
        .partition(|pod| pod.metadata.deletion_timestamp.is_none());
    pods.sort_by_key(|p| p.name_any());
    // A StatefulSet does not replace a pod until the pod object is gone, and only the kubelet of
    // its node removes a terminating pod: a lost node keeps the volume without a server until
    // someone says the node is down.
    if component == components::NFS_SERVER
        && pods.is_empty()
        && let Some(pod) = terminating.iter().min_by_key(|p| p.name_any())
    {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("(none)");
        let since = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        return Some(format!(
            "pod {} is terminating (since {since}) on node {node}, and its replacement starts only once it is \
             gone; if node {node} is down, delete the Node or taint it \
             node.kubernetes.io/out-of-service=nodeshutdown:NoExecute (docs/operator.md, \"Node loss\")",
            pod.name_any()
        ));
    }
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref().filter(|r| !STARTING.contains(r))?;
            // A pull error quotes registry URLs: no credential in one reaches the status.
            let message = waiting
                .message
                .as_deref()
                .map(|m| format!(": {}", sv_api::redact::scrub_userinfo(m)))
                .unwrap_or_default();
            let killed = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.reason.as_deref());
            let out_of_memory = match killed {
                Some("OOMKilled") if component == components::SYNCER => format!(
                    "; its last run was killed for using more memory than its limit (OOMKilled): a git source holds \
                     the largest file of a revision in memory while it fetches; raise the limit with the volume's {} \
                     annotation (docs/syncer.md, \"Memory\")",
                    sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION
                ),
                Some("OOMKilled") => {
                    "; its last run was killed for using more memory than its limit (OOMKilled)".into()
                }
                _ => String::new(),
            };
            Some(format!("pod {}: container {} is waiting: {reason}{message}{out_of_memory}", pod.name_any(), c.name))
        })
    })
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
    sv_common::entropy::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn pods(pods: Vec<Pod>) -> Store<Pod> {
        let mut writer = Writer::<Pod>::default();
        for pod in pods {
            writer.apply_watcher_event(&Event::Apply(pod));
        }
        writer.as_reader()
    }

    fn crash_looping(component: &str, last_reason: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{component}-x"), "namespace": "ns",
                         "labels": {labels::REFERENCE: "ref", labels::COMPONENT: component}},
            "status": {"containerStatuses": [{
                "name": component, "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": last_reason}},
            }]},
        }))
        .expect("a pod")
    }

    /// A syncer the kernel killed for memory says so, and names the annotation that raises its
    /// limit; another crash says neither.
    #[test]
    fn a_syncer_killed_for_memory_names_the_annotation_that_raises_its_limit() {
        let problem =
            waiting_pod(&pods(vec![crash_looping(components::SYNCER, "OOMKilled")]), "ref", components::SYNCER)
                .expect("a problem");
        assert!(problem.contains("CrashLoopBackOff") && problem.contains("OOMKilled"), "{problem}");
        assert!(problem.contains(sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION), "{problem}");
        let problem = waiting_pod(&pods(vec![crash_looping(components::SYNCER, "Error")]), "ref", components::SYNCER)
            .expect("a problem");
        assert!(!problem.contains("OOMKilled") && !problem.contains("memory"), "{problem}");
        let server =
            waiting_pod(&pods(vec![crash_looping(components::NFS_SERVER, "OOMKilled")]), "ref", components::NFS_SERVER)
                .expect("a problem");
        assert!(server.contains("OOMKilled") && !server.contains(sv_api::SYNCER_MEMORY_LIMIT_ANNOTATION), "{server}");
    }
}
