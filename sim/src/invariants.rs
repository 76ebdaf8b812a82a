//! The system's invariants on what the API server stores, checked by the [`World`] after every
//! simulated step on the writes committed since the last check, so every write is looked at once:
//!
//! - a volume's NFS address (`status.nfsServerAddress`, which consumers mount) never changes once
//!   reported, and does not vanish while the volume exists;
//! - no value of a Secret (as written, before or after a rotation) appears in a volume's status or
//!   in an Event of either API (they share one storage, as on a real server; the whole object is
//!   searched);
//! - no pod is created that mounts a ClusterSharedVolume's claim in a namespace the volume's
//!   `namespaceSelector` does not allow (checked with the simulation's own selector code, not the
//!   webhook's);
//! - no such Secret value appears in a log line of any program (see [`crate::logtap`]);
//! - once a volume is gone (its finalizer released) and [`CLEANUP_BOUND`] has passed with no
//!   fault in place, nothing made for it remains: no object owned by it or carrying its reference
//!   label, no disk provisioned for one of its claims, no attachment of such a disk; and nothing
//!   of the kind is created afterwards (a controller acting on a stale view).
//!
//! The consumers' invariants over NFS are in [`crate::programs::consumer`]; both stop the run.
//!
//! [`World`]: crate::world::World

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::api::selector::LabelSelector;
use crate::api::store::{ChangeKind, Store};

/// Values shorter than this are not searched for (a `"true"` or a port would match anything).
const SHORTEST_SECRET: usize = 6;

/// What is checked, and how often.
#[derive(Clone, Debug, Default)]
pub struct Invariants {
    /// The store's resource version up to which every write was checked.
    checked_up_to: u64,
    /// The first NFS address each volume reported.
    addresses: BTreeMap<String, String>,
    /// Every Secret value written so far.
    secrets: Vec<String>,
    /// Each invariant and how many objects it looked at.
    counts: BTreeMap<&'static str, u64>,
    /// Events looked at (the Secret invariant's main ground).
    events_checked: u64,
    /// Volumes gone whose leftovers are not checked yet, and those found clean.
    deleted: Vec<DeletedVolume>,
    cleaned: Vec<DeletedVolume>,
    /// The reference label of every claim seen, by the claim's uid: a provisioned disk names its
    /// claim only by uid once the claim is gone.
    claim_references: BTreeMap<String, String>,
}

/// A volume that is gone, and what its objects are known by.
#[derive(Clone, Debug)]
struct DeletedVolume {
    key: String,
    uid: String,
    /// None once another volume took the same reference (its objects carry the label rightly).
    reference: Option<String>,
    /// When the cleanup bound started: the step after the volume went, or the last fault healing.
    since: Option<Duration>,
}

/// How long after a volume is gone, with no fault in place, everything made for it must be gone:
/// the operator's cleanup, the garbage collector and the PV controller's reclaim each take a few
/// seconds; a lost node's pods take as long as the node stays lost, which counts as a fault.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(120);

pub const ADDRESS: &str = "a volume's NFS address never changes (volume writes)";
pub const SECRETS: &str = "no Secret value in a volume status or an Event (volume and Event writes)";
pub const NAMESPACES: &str = "no pod mounts a ClusterSharedVolume outside its namespaces (pod creations)";
pub const LOGS: &str = "no Secret value in a log line (log lines)";
pub const CLEANUP: &str = "nothing a deleted volume had remains (volumes checked after the bound, and creations after)";

impl Invariants {
    /// Each invariant with how many writes it looked at.
    pub fn counts(&self) -> Vec<(String, u64)> {
        [ADDRESS, SECRETS, LOGS, NAMESPACES, CLEANUP]
            .iter()
            .map(|i| (i.to_string(), self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }

    /// How many distinct Secret values the run wrote, and how many Events were searched for them:
    /// Secrets without a single Event checked mean the invariant had nothing to look at.
    pub fn secret_coverage(&self) -> (usize, u64) {
        (self.secrets.len(), self.events_checked)
    }

    fn count(&mut self, invariant: &'static str) {
        *self.counts.entry(invariant).or_default() += 1;
    }

    /// Checks the writes committed since the last call; the first broken invariant is returned
    /// as (invariant, what broke it).
    pub fn check(&mut self, store: &Store) -> Result<(), (&'static str, String)> {
        // Versions start above 1, as on a real server: the first write is the first after that.
        self.checked_up_to = self.checked_up_to.max(crate::api::store::FIRST_RESOURCE_VERSION);
        let changes: Vec<_> = match store.changes_since(self.checked_up_to) {
            Ok(changes) => changes.cloned().collect(),
            // The log no longer holds them all: a checker that skips writes would pass wrongly.
            Err(oldest) => {
                return Err((
                    "every write is checked",
                    format!(
                        "writes after {} were compacted before they were checked (oldest {oldest})",
                        self.checked_up_to
                    ),
                ));
            }
        };
        for change in changes {
            self.checked_up_to = change.rv;
            let (group, plural) = change.resource.storage();
            let object = &change.object;
            if change.kind == ChangeKind::Added {
                self.check_not_recreated(object)?;
            }
            match (group, plural) {
                ("", "secrets") if change.kind != ChangeKind::Deleted => self.learn_secret(object),
                ("sv.sharedvolume.io", "sharedvolumes" | "clustersharedvolumes") => {
                    self.check_volume(object, change.kind)?;
                }
                ("", "events") => {
                    self.count(SECRETS);
                    self.events_checked += 1;
                    let text = object.to_string();
                    if let Some(secret) = self.secrets.iter().find(|s| text.contains(s.as_str())) {
                        let reason = object["reason"].as_str().unwrap_or_default();
                        return Err((
                            SECRETS,
                            format!("an Event ({reason}) shows a Secret value ({} characters)", secret.len()),
                        ));
                    }
                }
                ("", "pods") if change.kind == ChangeKind::Added => self.check_pod(store, object)?,
                ("", "persistentvolumeclaims") => {
                    let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
                    if let Some(reference) = object["metadata"]["labels"][sv_operator::api::labels::REFERENCE].as_str()
                    {
                        self.claim_references.insert(uid.to_string(), reference.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Log lines written since the last call: none may show a Secret value written so far.
    /// (A line logged before its Secret was written is not caught: the programs log what they
    /// read, after it was written.)
    pub fn check_log_lines(&mut self, lines: &[String]) -> Result<(), (&'static str, String)> {
        for line in lines {
            self.count(LOGS);
            if let Some(secret) = self.secrets.iter().find(|s| line.contains(s.as_str())) {
                // The line without the value, so that the report does not leak it again.
                let shown: String = line.replace(secret.as_str(), "<the Secret value>").chars().take(400).collect();
                return Err((LOGS, format!("a log line shows a Secret value: {shown}")));
            }
        }
        Ok(())
    }

    fn learn_secret(&mut self, secret: &Value) {
        // Certificates are public; their keys are not.
        let public = |key: &str| key.ends_with(".crt") || key.ends_with(".pem") && !key.contains("key");
        let decoded =
            secret["data"].as_object().into_iter().flatten().filter(|(k, _)| !public(k)).filter_map(|(_, v)| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
                String::from_utf8(bytes).ok()
            });
        let plain = secret["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !public(k))
            .filter_map(|(_, v)| v.as_str().map(str::to_string));
        for value in decoded.chain(plain) {
            // A multi-line value (a private key) is searched for line by line: a message quoting
            // part of it is as bad.
            for piece in value.lines().map(str::trim).filter(|l| l.len() >= SHORTEST_SECRET && !l.starts_with("-----"))
            {
                if !self.secrets.iter().any(|s| s == piece) {
                    self.secrets.push(piece.to_string());
                }
            }
        }
    }

    fn check_volume(&mut self, volume: &Value, kind: ChangeKind) -> Result<(), (&'static str, String)> {
        let key = volume_key(volume);
        self.count(ADDRESS);
        let address = volume["status"]["nfsServerAddress"].as_str().filter(|a| !a.is_empty());
        match (self.addresses.get(&key), address) {
            (Some(first), Some(now)) if first != now => {
                return Err((ADDRESS, format!("the NFS address of {key} changed from {first} to {now}")));
            }
            // A deleted volume's last write may carry its status as it was; a live one must not lose it.
            (Some(first), None) if kind != ChangeKind::Deleted && volume["metadata"]["deletionTimestamp"].is_null() => {
                return Err((ADDRESS, format!("the NFS address {first} of {key} vanished while the volume exists")));
            }
            (None, Some(now)) => {
                self.addresses.insert(key.clone(), now.to_string());
            }
            _ => {}
        }
        let reference = volume["spec"]["referenceValue"].as_str().filter(|r| !r.is_empty());
        if kind == ChangeKind::Deleted {
            self.addresses.remove(&key);
            self.deleted.push(DeletedVolume {
                key: key.clone(),
                uid: volume["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
                reference: reference.map(str::to_string),
                since: None,
            });
        } else if kind == ChangeKind::Added {
            for gone in self.deleted.iter_mut().chain(self.cleaned.iter_mut()) {
                if gone.reference.as_deref() == reference {
                    gone.reference = None;
                }
            }
        }
        self.count(SECRETS);
        let status = volume["status"].to_string();
        if let Some(secret) = self.secrets.iter().find(|s| status.contains(s.as_str())) {
            return Err((SECRETS, format!("the status of {key} shows a Secret value ({} characters)", secret.len())));
        }
        Ok(())
    }

    /// Volumes gone for [`CLEANUP_BOUND`] with no fault in place (`faults` says whether one is):
    /// whatever was made for them must be gone. Called after every step, at simulated time `now`.
    pub fn check_cleanup(&mut self, store: &Store, now: Duration, faults: bool) -> Result<(), (&'static str, String)> {
        for gone in &mut self.deleted {
            // The bound counts from the volume's going or from the last fault healing.
            if gone.since.is_none() || faults {
                gone.since = Some(now);
            }
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deleted)
            .into_iter()
            .partition(|gone| gone.since.is_some_and(|since| now.saturating_sub(since) >= CLEANUP_BOUND));
        self.deleted = waiting;
        for gone in due {
            self.count(CLEANUP);
            let left = self.leftovers(store, &gone);
            if !left.is_empty() {
                return Err((
                    CLEANUP,
                    format!(
                        "{} was deleted {} s ago and these remain: {}",
                        gone.key,
                        CLEANUP_BOUND.as_secs(),
                        left.join(", ")
                    ),
                ));
            }
            self.cleaned.push(gone);
        }
        Ok(())
    }

    /// Volumes deleted whose bound has not passed yet.
    pub fn cleanups_pending(&self) -> usize {
        self.deleted.len()
    }

    /// What remains of a deleted volume: objects it owns or labelled with its reference, disks
    /// provisioned for its claims, and their attachments.
    fn leftovers(&self, store: &Store, gone: &DeletedVolume) -> Vec<String> {
        let claims_of_volume = |claim_uid: &str| {
            gone.reference.is_some() && self.claim_references.get(claim_uid) == gone.reference.as_ref()
        };
        let mut disks = Vec::new();
        let mut left = Vec::new();
        for object in store.all() {
            let meta = &object["metadata"];
            let kind = object["kind"].as_str().unwrap_or_default();
            let disk_of_claim =
                kind == "PersistentVolume" && object["spec"]["claimRef"]["uid"].as_str().is_some_and(claims_of_volume);
            if disk_of_claim {
                disks.push(meta["name"].as_str().unwrap_or_default().to_string());
            }
            if disk_of_claim || self.belongs_to(object, gone) {
                left.push(describe(object));
            }
        }
        for object in store.all().filter(|o| o["kind"] == "VolumeAttachment") {
            let disk = object["spec"]["source"]["persistentVolumeName"].as_str().unwrap_or_default();
            if disks.iter().any(|d| d == disk) && !left.contains(&describe(object)) {
                left.push(describe(object));
            }
        }
        left
    }

    /// Whether `object` was made for the volume `gone`: an owner reference to it, or its
    /// reference label while no other volume holds that reference.
    fn belongs_to(&self, object: &Value, gone: &DeletedVolume) -> bool {
        let meta = &object["metadata"];
        let owned = meta["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["uid"] == gone.uid.as_str()));
        let labelled = gone
            .reference
            .as_deref()
            .is_some_and(|reference| meta["labels"][sv_operator::api::labels::REFERENCE] == reference);
        // The volume's own last state carries its reference too.
        let volume = object["spec"]["referenceValue"].is_string() && meta["uid"] == gone.uid.as_str();
        (owned || labelled) && !volume
    }

    /// A new object made for a volume that is gone and was found clean: something acted on a
    /// stale view.
    fn check_not_recreated(&self, object: &Value) -> Result<(), (&'static str, String)> {
        if let Some(gone) = self.cleaned.iter().find(|gone| self.belongs_to(object, gone)) {
            return Err((
                CLEANUP,
                format!("{} was created after {} was deleted and cleaned up", describe(object), gone.key),
            ));
        }
        Ok(())
    }

    /// A new pod that mounts a ClusterSharedVolume's consumer claim: its namespace must be one
    /// the volume allows.
    fn check_pod(&mut self, store: &Store, pod: &Value) -> Result<(), (&'static str, String)> {
        use sv_operator::api::labels;
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let claims = crate::api::ResourceId::new("", "v1", "persistentvolumeclaims");
        let volumes = crate::api::ResourceId::new("sv.sharedvolume.io", "v1alpha1", "clustersharedvolumes");
        let namespaces = crate::api::ResourceId::new("", "v1", "namespaces");
        for claim_name in pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        {
            let Some(claim) = store.get(&claims, namespace, claim_name) else { continue };
            // A consumer's claim (the NFS server's own disk claim carries the volume's labels too).
            let claim_labels = &claim["metadata"]["labels"];
            if claim_labels[labels::VOLUME_KIND] != "ClusterSharedVolume"
                || claim_labels[labels::CONSUMER_NAMESPACE].is_null()
            {
                continue;
            }
            self.count(NAMESPACES);
            let reference = &claim["metadata"]["labels"][labels::REFERENCE];
            let Some((_, volume)) = store.list(&volumes, None).find(|(_, v)| &v["spec"]["referenceValue"] == reference)
            else {
                continue;
            };
            let Some(selector) = selector_text(&volume["spec"]["namespaceSelector"]) else { continue };
            let selector =
                LabelSelector::parse(&selector).map_err(|e| (NAMESPACES, format!("namespaceSelector: {e}")))?;
            let ns = store.get(&namespaces, "", namespace).map(|n| (**n).clone()).unwrap_or_default();
            if !selector.matches(&ns) {
                let name = volume["metadata"]["name"].as_str().unwrap_or_default();
                let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                return Err((
                    NAMESPACES,
                    format!(
                        "pod {namespace}/{pod_name} mounts ClusterSharedVolume {name}, which does not allow namespace {namespace}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `Kind/namespace/name` (`-` for no namespace).
fn describe(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        meta["namespace"].as_str().unwrap_or("-"),
        meta["name"].as_str().unwrap_or_default()
    )
}

fn volume_key(volume: &Value) -> String {
    let name = volume["metadata"]["name"].as_str().unwrap_or_default();
    match volume["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) as selector text; None for no
/// selector (everything matches).
fn selector_text(selector: &Value) -> Option<String> {
    if selector.is_null() {
        return None;
    }
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::ResourceId;

    fn secret(value: &str) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(value);
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, "data": {"password": data}})
    }

    fn event(api_version: &str, text_field: &str, text: &str) -> Value {
        let mut event = json!({"apiVersion": api_version, "kind": "Event",
            "metadata": {"name": format!("e-{}", api_version.len()), "namespace": "default"}, "reason": "SyncFailed"});
        event[text_field] = json!(text);
        event
    }

    #[test]
    fn a_secret_value_in_an_event_of_either_api_or_a_status_is_caught() {
        for (api_version, field) in [("events.k8s.io/v1", "note"), ("v1", "message")] {
            let mut store = Store::new(1000);
            let mut invariants = Invariants::default();
            store.put(&ResourceId::new("", "v1", "secrets"), secret("hunter2-token"));
            store.put(&ResourceId::new("", "v1", "events"), event(api_version, field, "pulled without it"));
            assert_eq!(invariants.check(&store), Ok(()));
            store.put(&ResourceId::new("", "v1", "events"), event(api_version, field, "pulled with hunter2-token"));
            let found = invariants.check(&store).unwrap_err();
            assert_eq!(found.0, SECRETS, "{api_version}: {found:?}");
        }
        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&ResourceId::new("", "v1", "secrets"), secret("hunter2-token"));
        let volume = json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
                            "metadata": {"name": "v", "namespace": "default"}, "status": {"message": "hunter2-token"}});
        store.put(&ResourceId::new("sv.sharedvolume.io", "v1alpha1", "sharedvolumes"), volume);
        assert_eq!(invariants.check(&store).unwrap_err().0, SECRETS);
    }

    #[test]
    fn an_nfs_address_that_changes_or_vanishes_is_caught() {
        let id = ResourceId::new("sv.sharedvolume.io", "v1alpha1", "sharedvolumes");
        let volume = |address: Option<&str>| json!({"kind": "SharedVolume", "metadata": {"name": "v", "namespace": "default"}, "status": {"nfsServerAddress": address}});
        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&id, volume(None));
        store.put(&id, volume(Some("10.96.0.10")));
        assert_eq!(invariants.check(&store), Ok(()));
        store.put(&id, volume(Some("10.96.0.11")));
        assert_eq!(invariants.check(&store).unwrap_err().0, ADDRESS);
        let mut invariants = Invariants::default();
        let mut store = Store::new(1000);
        store.put(&id, volume(Some("10.96.0.10")));
        store.put(&id, volume(None));
        assert!(invariants.check(&store).unwrap_err().1.contains("vanished"));
    }

    #[test]
    fn what_a_deleted_volume_leaves_past_the_bound_or_gets_afterwards_is_caught() {
        use sv_operator::api::labels::REFERENCE;
        let volumes = ResourceId::new("sv.sharedvolume.io", "v1alpha1", "sharedvolumes");
        let claims = ResourceId::new("", "v1", "persistentvolumeclaims");
        let disks = ResourceId::new("", "v1", "persistentvolumes");
        let volume = |uid: &str| {
            json!({"kind": "SharedVolume", "metadata": {"name": "v", "namespace": "default", "uid": uid},
                                        "spec": {"referenceValue": "sv-ref"}})
        };
        let claim = json!({"kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default", "uid": "claim-1", "labels": {REFERENCE: "sv-ref"}}});
        let disk = json!({"kind": "PersistentVolume", "metadata": {"name": "pvc-1"}, "spec": {"claimRef": {"uid": "claim-1"}}});
        let second = |n: u64| Duration::from_secs(n);

        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&volumes, volume("v-1"));
        store.put(&claims, claim.clone());
        store.put(&disks, disk.clone());
        store.remove(&volumes, "default", "v");
        store.remove(&claims, "default", "data");
        assert_eq!(invariants.check(&store), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(10), false), Ok(()));
        // A fault in place holds the bound back, and it starts again once healed.
        assert_eq!(invariants.check_cleanup(&store, second(200), true), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(300), false), Ok(()));
        let (invariant, detail) = invariants.check_cleanup(&store, second(320), false).unwrap_err();
        assert_eq!(invariant, CLEANUP);
        assert!(detail.contains("PersistentVolume/-/pvc-1"), "{detail}");

        // Found clean, then something creates an object for it again.
        store.remove(&disks, "", "pvc-1");
        let mut invariants = Invariants::default();
        assert_eq!(invariants.check(&store), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(0), false), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(120), false), Ok(()));
        assert_eq!(invariants.cleanups_pending(), 0);
        store.put(&claims, claim.clone());
        assert_eq!(invariants.check(&store).unwrap_err().0, CLEANUP);

        // A new volume with the same reference owns what carries it.
        let mut invariants = Invariants::default();
        let mut store = Store::new(1000);
        store.put(&volumes, volume("v-1"));
        store.remove(&volumes, "default", "v");
        assert_eq!(invariants.check(&store), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(0), false), Ok(()));
        assert_eq!(invariants.check_cleanup(&store, second(120), false), Ok(()));
        store.put(&volumes, volume("v-2"));
        store.put(&claims, claim);
        assert_eq!(invariants.check(&store), Ok(()));
    }

    #[test]
    fn a_secret_value_in_a_log_line_is_caught_without_being_shown() {
        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&ResourceId::new("", "v1", "secrets"), secret("hunter2-token"));
        assert_eq!(invariants.check(&store), Ok(()));
        assert_eq!(invariants.check_log_lines(&["INFO sv_syncer: message=synced".into()]), Ok(()));
        let (invariant, detail) =
            invariants.check_log_lines(&["DEBUG sv_syncer: url=https://u:hunter2-token@h/".into()]).unwrap_err();
        assert_eq!(invariant, LOGS);
        assert!(
            !detail.contains("hunter2-token") && detail.contains("url=https://u:<the Secret value>@h/"),
            "{detail}"
        );
    }

    #[test]
    fn selectors_become_selector_text() {
        let selector = json!({"matchLabels": {"team": "a"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]}, {"key": "legacy", "operator": "DoesNotExist"}]});
        assert_eq!(selector_text(&selector).as_deref(), Some("team=a,tier in (x,y),!legacy"));
        assert_eq!(selector_text(&Value::Null), None);
    }
}
