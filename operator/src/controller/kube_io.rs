//! The Kubernetes requests the reconciler makes: server-side apply of planned objects, deletes,
//! the status patch, finalizer patches. Their exact shapes are tested against a mocked transport.

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::Error;
use super::cache::{ClusterCache, Verdict, digest, fingerprint, holds};
use crate::api::{Volume, VolumeStatus};
use crate::plan::{Desired, ObjectKey};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sharedvolume-operator";

/// Kinds the operator creates, with whether they are namespaced.
pub const OWNED_KINDS: [&str; 13] = [
    "Secret",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "Service",
    "StatefulSet",
    "NetworkPolicy",
    "ReplicaSet",
    "Lease",
];

/// API resource of a kind the operator creates, and whether it is namespaced.
pub fn api_resource(kind: &str) -> Option<(ApiResource, bool)> {
    Some(match kind {
        "Secret" => (ApiResource::erase::<Secret>(&()), true),
        "ServiceAccount" => (ApiResource::erase::<ServiceAccount>(&()), true),
        "Role" => (ApiResource::erase::<Role>(&()), true),
        "RoleBinding" => (ApiResource::erase::<RoleBinding>(&()), true),
        "ClusterRole" => (ApiResource::erase::<ClusterRole>(&()), false),
        "ClusterRoleBinding" => (ApiResource::erase::<ClusterRoleBinding>(&()), false),
        "PersistentVolumeClaim" => (ApiResource::erase::<PersistentVolumeClaim>(&()), true),
        "PersistentVolume" => (ApiResource::erase::<PersistentVolume>(&()), false),
        "Service" => (ApiResource::erase::<Service>(&()), true),
        "StatefulSet" => (ApiResource::erase::<StatefulSet>(&()), true),
        "NetworkPolicy" => (ApiResource::erase::<NetworkPolicy>(&()), true),
        "ReplicaSet" => (ApiResource::erase::<ReplicaSet>(&()), true),
        "Lease" => (ApiResource::erase::<Lease>(&()), true),
        _ => return None,
    })
}

fn dynamic_api(client: &Client, key: &ObjectKey) -> Result<Api<DynamicObject>, Error> {
    let (resource, namespaced) = api_resource(key.kind).ok_or(Error::UnknownKind(key.kind))?;
    Ok(match (&key.namespace, namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side applies one planned object, taking ownership of every field it sets, unless it
/// already holds all of it (then nothing is sent); returns whether it wrote. A child the cache
/// cannot vouch for is read once from the API server rather than written.
pub async fn apply(client: &Client, cache: &ClusterCache, object: &Desired) -> Result<bool, Error> {
    let key = object.key();
    let body = serde_json::to_value(object).map_err(|e| Error::Serialize(key.to_string(), e))?;
    let desired = digest(&body);
    let api = dynamic_api(client, &key)?;
    match cache.verdict(&key, desired) {
        Verdict::Holds => return Ok(false),
        Verdict::Differs => {}
        Verdict::Unknown => {
            if let Some(current) = api.get_opt(&key.name).await?
                && let Some(seen) = fingerprint(&current)
                && serde_json::to_value(&current).is_ok_and(|current| holds(&current, &body))
            {
                cache.record(&key, desired, Some(seen));
                return Ok(false);
            }
        }
    }
    let applied = api
        .patch(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| Error::Apply { object: key.to_string(), source })?;
    cache.record(&key, desired, fingerprint(&applied));
    Ok(true)
}

/// Deletes one object; an object already gone is fine. A workload goes in the foreground: it
/// stays (deleting) until its pods are gone, which the plan waits for before it removes what
/// those pods use (see `plan::workloads_first`); anything else in the background.
pub async fn delete(client: &Client, key: &ObjectKey) -> Result<(), Error> {
    let api = dynamic_api(client, key)?;
    let params = if crate::plan::WORKLOAD_KINDS.contains(&key.kind) {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    match api.delete(&key.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete { object: key.to_string(), source }),
    }
}

/// Names of objects of `kind` that carry `selector`, across all namespaces or in one.
pub async fn list_keys(
    client: &Client,
    kind: &'static str,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<ObjectKey>, Error> {
    let (resource, namespaced) = api_resource(kind).ok_or(Error::UnknownKind(kind))?;
    let api: Api<DynamicObject> = match (namespace, namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let list = api.list_metadata(&kube::api::ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(|o| ObjectKey { kind, namespace: o.metadata.namespace.clone().filter(|_| namespaced), name: o.name_any() })
        .collect())
}

/// The volume's own API handle (namespaced or cluster-wide).
pub fn volume_api<V: Volume>(client: &Client, volume: &V) -> Api<V> {
    V::api(client.clone(), volume.meta().namespace.as_deref())
}

/// Server-side applies the operator's part of the status; `sync` belongs to the syncer and is
/// left out, so its field manager keeps it.
pub async fn apply_status<V: Volume>(client: &Client, volume: &V, status: &VolumeStatus) -> Result<(), Error> {
    let mut ours = status.clone();
    ours.sync = None;
    let body = json!({
        "apiVersion": V::api_version(&()),
        "kind": V::kind(&()),
        "status": ours,
    });
    volume_api(client, volume)
        .patch_status(&volume.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Writes `spec.referenceValue` once, guarded by the resourceVersion that was read so a concurrent
/// edit is never overwritten.
pub async fn set_reference_value<V: Volume>(client: &Client, volume: &V, reference: &str) -> Result<(), Error> {
    let body = json!({
        "metadata": {"resourceVersion": volume.resource_version()},
        "spec": {"referenceValue": reference},
    });
    volume_api(client, volume).patch(&volume.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(())
}

/// The JSON patch that adds `finalizer`, guarded by a `test` of the current list.
pub fn add_finalizer_patch(current: &[String], finalizer: &str) -> Value {
    if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ])
    }
}

/// The JSON patch that removes `finalizer` at its index, guarded by a `test` of that entry.
pub fn remove_finalizer_patch(current: &[String], finalizer: &str) -> Option<Value> {
    let index = current.iter().position(|f| f == finalizer)?;
    let path = format!("/metadata/finalizers/{index}");
    Some(json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]))
}

/// Adds the finalizer; returns the volume as stored after the patch (its new resourceVersion is
/// what a later guarded write must carry), or None when the volume is gone.
pub async fn add_finalizer<V: Volume>(client: &Client, volume: &V) -> Result<Option<V>, Error> {
    let patch = add_finalizer_patch(volume.finalizers(), V::KIND.finalizer());
    json_patch(client, volume, patch).await
}

pub async fn remove_finalizer<V: Volume>(client: &Client, volume: &V) -> Result<(), Error> {
    match remove_finalizer_patch(volume.finalizers(), V::KIND.finalizer()) {
        Some(patch) => json_patch(client, volume, patch).await.map(|_| ()),
        None => Ok(()),
    }
}

async fn json_patch<V: Volume>(client: &Client, volume: &V, patch: Value) -> Result<Option<V>, Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Serialize("finalizer patch".into(), e))?;
    match volume_api(client, volume).patch(&volume.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await
    {
        Ok(stored) => Ok(Some(stored)),
        // Already gone: nothing left to guard.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
