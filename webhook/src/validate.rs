//! `/validate`: SharedVolumes and ClusterSharedVolumes are checked by the same
//! [`sv_api::validation`] the operator runs, before they are stored. Errors deny with the
//! operator's messages (immutable fields answer "field is immutable"); what the Go original
//! accepted and we discourage (inline credentials, credentials over plain http, sync settings on a
//! volume without a source) is an admission warning.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde::de::DeserializeOwned;
use sv_api::validation::{Validation, VolumeInput, validate_volume};
use sv_api::{ClusterSharedVolume, GROUP, SharedVolume, Volume, VolumeKind};

use crate::mutate::{Decision, Denial};

/// Decides a volume review.
pub fn validate(request: &AdmissionRequest<DynamicObject>) -> Decision {
    let kind = (request.kind.group == GROUP).then(|| VolumeKind::parse(&request.kind.kind)).flatten();
    let Some(kind) = kind else {
        return Decision::deny(
            "UnsupportedResource",
            format!(
                "sv-webhook /validate handles {GROUP} SharedVolumes and ClusterSharedVolumes, not {}/{}; \
                 fix the rules of the ValidatingWebhookConfiguration",
                request.kind.group, request.kind.kind
            ),
        );
    };
    // The status subresource is the operator's; a rule for the kind does not match it, but a
    // configuration that says `*/*` would send it.
    if request.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Decision::default();
    }
    match kind {
        VolumeKind::SharedVolume => decide::<SharedVolume>(request),
        VolumeKind::ClusterSharedVolume => decide::<ClusterSharedVolume>(request),
    }
}

fn read<V: DeserializeOwned>(object: &DynamicObject) -> Result<V, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// What validation reads of `volume`, in the namespace the review names (where it is stored).
fn input_of<'a, V: Volume>(volume: &'a V, namespace: Option<&'a str>) -> VolumeInput<'a> {
    let mut input = VolumeInput::of(volume);
    input.namespace = namespace.or(input.namespace);
    input
}

fn decide<V: Volume>(request: &AdmissionRequest<DynamicObject>) -> Decision {
    let (object, old) = match request.operation {
        Operation::Create => (request.object.as_ref(), None),
        Operation::Update => (request.object.as_ref(), request.old_object.as_ref()),
        Operation::Delete | Operation::Connect => return Decision::default(),
    };
    let Some(object) = object else {
        return Decision::deny(
            "Malformed",
            format!("a {} review without an object", crate::review::operation_name(&request.operation)),
        );
    };
    let new: V = match read(object) {
        Ok(v) => v,
        Err(e) => return Decision::deny("Invalid", format!("{} cannot be read: {e}", V::KIND)),
    };
    let old: Option<V> = match old.map(read::<V>).transpose() {
        Ok(old) => old,
        Err(e) => return Decision::deny("Malformed", format!("the stored {} cannot be read: {e}", V::KIND)),
    };
    // The review's namespace is the one the object is stored in.
    let namespace = request.namespace.as_deref().filter(|n| !n.is_empty());
    let mut outcome: Validation = validate_volume(input_of(&new, namespace), old.as_ref().map(|o| o.volume_spec()));
    // Ratcheting, as the API server validates custom resources: an update is refused only for
    // what it makes wrong. An error the stored object already had (stored while this webhook was
    // down; its failure policy is Ignore) does not refuse an update that leaves it as it was, or
    // the operator could never add or remove its finalizer and such a volume could be neither
    // marked Failed nor deleted.
    let mut kept = Vec::new();
    if let Some(old) = &old {
        let before = validate_volume(input_of(old, namespace), None).errors;
        (kept, outcome.errors) = outcome.errors.into_iter().partition(|e| before.contains(e));
    }
    let mut warnings = outcome.warnings.clone();
    if !kept.is_empty() {
        warnings.push(format!(
            "{} {:?} was stored invalid and still is (this update leaves that as it was): {}",
            V::KIND,
            kube::ResourceExt::name_any(&new),
            sv_api::validation::summarize(&kept)
        ));
    }
    if outcome.is_valid() {
        return Decision { warnings, ..Decision::default() };
    }
    let name = kube::ResourceExt::name_any(&new);
    let reason = if outcome.errors.iter().any(|e| e.kind == sv_api::validation::ErrorKind::Immutable) {
        "Immutable"
    } else {
        "Invalid"
    };
    // Worded as the API server words a rejected object, so users see the familiar form.
    let message = format!("{} {name:?} is invalid: {}", V::KIND, outcome.summary());
    Decision { warnings, ..Decision::from(Denial { reason, message }) }
}
