//! What makes a volume reconcile besides its own changes: its children, its consumer pods and its
//! syncer and NFS server pods, told by the very caches a reconcile reads them from.
//!
//! kube-runtime's `watches` would open a watch of its own per kind, and nothing orders two
//! watches of one kind: the trigger could arrive before the cache holds the change, the
//! reconcile would read the old state (an NFS server not ready yet) and wait for its requeue
//! (10 s while a volume is Pending, 5 minutes once it is Ready), and the cache's update, coming
//! later, would trigger nothing. Here each cache tells the volumes an object belongs to after it
//! has stored the object, so a reconcile always sees at least the change that triggered it. One
//! watch per kind instead of two costs the API server less too.

use futures::Stream;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::observe::requested_by_pod;
use crate::api::{Volume, VolumeKind, annotations};

/// A volume by kind, namespace (none for a ClusterSharedVolume) and name.
type VolumeKey = (Option<String>, String);

/// Kinds of children whose changes a reconcile reads: readiness of the NFS server's StatefulSet
/// and the syncer's ReplicaSet, the Service's address, the data claim's phase. Changes of the
/// other children (RBAC, NetworkPolicies, Secrets) are only drift, which the next reconcile
/// corrects.
pub const TRIGGERING_CHILDREN: [&str; 4] = ["StatefulSet", "ReplicaSet", "Service", "PersistentVolumeClaim"];

/// The sending side, cloned into every cache.
#[derive(Clone)]
pub struct Triggers {
    shared_volumes: mpsc::UnboundedSender<VolumeKey>,
    cluster_shared_volumes: mpsc::UnboundedSender<VolumeKey>,
}

/// The receiving side: one stream per volume kind, for its controller.
pub struct TriggerStreams {
    pub shared_volumes: mpsc::UnboundedReceiver<VolumeKey>,
    pub cluster_shared_volumes: mpsc::UnboundedReceiver<VolumeKey>,
}

impl Triggers {
    pub fn new() -> (Self, TriggerStreams) {
        let (sv_tx, sv_rx) = mpsc::unbounded();
        let (csv_tx, csv_rx) = mpsc::unbounded();
        (
            Self { shared_volumes: sv_tx, cluster_shared_volumes: csv_tx },
            TriggerStreams { shared_volumes: sv_rx, cluster_shared_volumes: csv_rx },
        )
    }

    fn volume(&self, kind: VolumeKind, key: VolumeKey) {
        let sender = match kind {
            VolumeKind::SharedVolume => &self.shared_volumes,
            VolumeKind::ClusterSharedVolume => &self.cluster_shared_volumes,
        };
        // A closed receiver is a controller that has stopped: nobody is left to tell.
        let _ = sender.unbounded_send(key);
    }

    /// An object the operator made (a child, a syncer or NFS server pod) changed: the volume
    /// its owner annotation names reconciles. The annotation, not the ownerReference: it is on
    /// every object the operator makes, also where an ownerReference cannot be (a SharedVolume's
    /// objects in another namespace).
    pub fn owned(&self, metadata: &ObjectMeta) {
        let Some(owner) = metadata.annotations.as_ref().and_then(|a| a.get(annotations::OWNER)) else { return };
        for kind in [VolumeKind::SharedVolume, VolumeKind::ClusterSharedVolume] {
            if let Some(key) = sv_api::consumer::Owner::parse_owner_annotation(owner, kind) {
                self.volume(kind, key);
            }
        }
    }

    /// A pod that asks for volumes changed: each volume it asks for reconciles (its consumer
    /// claims, and its blocking pods while it is deleted).
    pub fn consumer_pod(&self, pod: &Pod) {
        for kind in [VolumeKind::SharedVolume, VolumeKind::ClusterSharedVolume] {
            for key in requested_by_pod(pod, kind) {
                self.volume(kind, key);
            }
        }
    }
}

/// The objects a watch event touches (an applied, deleted or listed object), as kube-runtime's
/// own watches trigger on them; `Init` and `InitDone` touch none.
pub fn touched<K>(event: &watcher::Event<K>) -> Option<&K> {
    match event {
        watcher::Event::Apply(object) | watcher::Event::Delete(object) | watcher::Event::InitApply(object) => {
            Some(object)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// A controller's triggers as the references it schedules.
pub fn references<V: Volume>(keys: mpsc::UnboundedReceiver<VolumeKey>) -> impl Stream<Item = ObjectRef<V>> + Send
where
    V::DynamicType: Default,
{
    use futures::StreamExt;
    keys.map(|(namespace, name)| {
        let reference = ObjectRef::new(&name);
        match namespace {
            Some(ns) => reference.within(&ns),
            None => reference,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn owned_by(owner: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("child".into()),
            namespace: Some("sharedvolume-system".into()),
            annotations: Some([(annotations::OWNER.to_string(), owner.to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_owned_object_triggers_the_volume_its_annotation_names() {
        let (triggers, mut streams) = Triggers::new();
        triggers.owned(&owned_by("SharedVolume/team-a/docs"));
        triggers.owned(&owned_by("ClusterSharedVolume/shared"));
        triggers.owned(&owned_by("Deployment/team-a/web"));
        triggers.owned(&ObjectMeta::default());
        drop(triggers);
        let sv: Vec<_> = futures::executor::block_on(streams.shared_volumes.by_ref().collect());
        let csv: Vec<_> = futures::executor::block_on(streams.cluster_shared_volumes.by_ref().collect());
        assert_eq!(sv, vec![(Some("team-a".to_string()), "docs".to_string())]);
        assert_eq!(csv, vec![(None, "shared".to_string())]);
    }

    #[test]
    fn a_pod_triggers_the_volumes_it_asks_for() {
        let (triggers, mut streams) = Triggers::new();
        let mut consumer = Pod::default();
        consumer.metadata.namespace = Some("team-a".into());
        consumer.metadata.annotations = Some(
            [
                (VolumeKind::SharedVolume.pod_annotation().to_string(), "docs".to_string()),
                (VolumeKind::ClusterSharedVolume.pod_annotation().to_string(), "shared".to_string()),
            ]
            .into(),
        );
        triggers.consumer_pod(&consumer);
        drop(triggers);
        let sv: Vec<_> = futures::executor::block_on(streams.shared_volumes.by_ref().collect());
        let csv: Vec<_> = futures::executor::block_on(streams.cluster_shared_volumes.by_ref().collect());
        assert_eq!(sv, vec![(Some("team-a".to_string()), "docs".to_string())]);
        assert_eq!(csv, vec![(None, "shared".to_string())]);
    }
}
