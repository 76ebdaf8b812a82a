//! The handlers over every AdmissionReview a real kube-apiserver v1.36.2 sent
//! (`tests/admission/requests/`, copied from `../shared/admission/`), the patch applied to the recorded pod and the result
//! checked; and one case per fact of `tests/admission/README.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sv_common::telemetry::Health;
use sv_webhook::cluster::{ClaimState, Snapshot};
use sv_webhook::metrics::WebhookMetrics;
use sv_webhook::mutate::{MAX_VOLUMES_PER_POD, MutateSettings, Storage};
use sv_webhook::review::decode;
use sv_webhook::server::{Creator, Webhook, answer, answer_body};

fn admission_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admission")
}

fn recorded(name: &str) -> Value {
    let path = admission_dir().join("requests").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("recorded JSON")
}

fn cluster() -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.load_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml")).expect("fixtures");
    snapshot
}

/// What one review got: the response, the pod after its patch, the storage it created.
struct Outcome {
    response: Value,
    patched: Option<Value>,
    created: Vec<Storage>,
}

impl Outcome {
    fn allowed(&self) -> bool {
        self.response["allowed"] == json!(true)
    }
    fn message(&self) -> String {
        self.response["status"]["message"].as_str().unwrap_or_default().to_string()
    }
    fn patch(&self) -> Vec<Value> {
        match self.response["patch"].as_str() {
            None => Vec::new(),
            Some(b64) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 patch");
                serde_json::from_slice(&bytes).expect("JSON patch")
            }
        }
    }
    fn denied_with(&self, needles: &[&str]) {
        assert!(!self.allowed(), "expected a denial, got {:#}", self.response);
        let message = self.message();
        for needle in needles {
            assert!(message.contains(needle), "{message:?} should contain {needle:?}");
        }
    }
}

async fn review(endpoint: &str, review: &Value) -> Outcome {
    review_in(endpoint, review, cluster()).await
}

async fn review_in(endpoint: &str, review: &Value, cluster: Snapshot) -> Outcome {
    let created = Arc::new(Mutex::new(Vec::new()));
    let webhook = Webhook {
        cluster,
        settings: MutateSettings::default(),
        creator: Creator::Record(created.clone()),
        metrics: WebhookMetrics::register(&mut Registry::default()),
        health: Health::new(),
    };
    let body = serde_json::to_vec(review).expect("body");
    let answered = answer_body(&webhook, endpoint, &body).await.expect("decodes");
    let review_out = sv_webhook::review::encode(answered.response);
    assert_eq!(review_out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review_out["kind"], "AdmissionReview");
    let response = review_out["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "the answer carries the request's uid");
    let mut outcome = Outcome { response, patched: None, created: created.lock().expect("lock").clone() };
    if outcome.allowed() && outcome.response["patch"].is_string() {
        assert_eq!(outcome.response["patchType"], "JSONPatch");
        let mut pod = review["request"]["object"].clone();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(outcome.patch())).expect("patch parses");
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the object the server sent");
        outcome.patched = Some(pod);
    }
    outcome
}

fn with_annotations(mut review: Value, annotations: Value) -> Value {
    review["request"]["object"]["metadata"]["annotations"] = annotations;
    review
}

fn mounts_of(pod: &Value, name: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for field in ["initContainers", "containers"] {
        for c in pod["spec"][field].as_array().into_iter().flatten() {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if m["name"] == name {
                    out.push((
                        c["name"].as_str().unwrap_or_default().to_string(),
                        m["mountPath"].as_str().unwrap_or_default().to_string(),
                        m["readOnly"] == json!(true),
                    ));
                }
            }
        }
    }
    out
}

fn container_count(pod: &Value) -> usize {
    ["initContainers", "containers"].iter().map(|f| pod["spec"][f].as_array().map_or(0, Vec::len)).sum()
}

#[tokio::test]
async fn every_recorded_request_gets_an_answer() {
    let mut seen = 0;
    for entry in std::fs::read_dir(admission_dir().join("requests")).expect("requests dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with("-result.json") {
            continue;
        }
        let body = recorded(&name);
        let endpoint = if body["request"]["kind"]["kind"] == "Pod" { "mutate" } else { "validate" };
        let outcome = review(endpoint, &body).await;
        assert!(outcome.allowed(), "{name}: {:#}", outcome.response);
        // The server reads pod reviews as pods in one pass; the dynamic path answers the same.
        let webhook = Webhook {
            cluster: cluster(),
            settings: MutateSettings::default(),
            creator: Creator::Record(Arc::default()),
            metrics: WebhookMetrics::register(&mut Registry::default()),
            health: Health::new(),
        };
        let request = decode(&serde_json::to_vec(&body).expect("body")).expect("decodes");
        let (dynamic, _) = answer(&webhook, endpoint, &request).await;
        let dynamic = sv_webhook::review::encode(dynamic);
        assert_eq!(dynamic["response"], outcome.response, "{name}: both paths answer alike");
        seen += 1;
    }
    assert_eq!(seen, 10, "every recorded request was reviewed");
}

#[tokio::test]
async fn recorded_016_comes_out_in_the_shape_the_real_server_stored() {
    let body = recorded("016-pod-create-patched-pod.json");
    let stored = recorded("016-pod-create-patched-pod-result.json");
    let outcome = review("mutate", &body).await;
    let pod = outcome.patched.clone().expect("patched");
    // Appended, never replaced: the token volume stays first, ours follows.
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0], stored["spec"]["volumes"][0], "the ServiceAccount token volume is untouched");
    assert_eq!(volumes[1]["persistentVolumeClaim"], stored["spec"]["volumes"][1]["persistentVolumeClaim"]);
    for op in outcome.patch() {
        assert_eq!(op["op"], "add", "{op}");
        let path = op["path"].as_str().unwrap_or_default();
        assert!(path != "/spec/volumes", "an add of the whole list would drop the token volume: {op}");
    }
    let ours = volumes[1]["name"].as_str().expect("name");
    let mounts = mounts_of(&pod, ours);
    assert_eq!(mounts.len(), container_count(&pod), "every container and init container mounts it: {mounts:?}");
    assert!(mounts.iter().all(|(_, p, ro)| p == "/mnt/shared/data" && *ro), "at mountPath, read-only: {mounts:?}");
    // The token mount of each container stays where the server put it.
    for (field, i) in [("containers", 0), ("initContainers", 0)] {
        assert_eq!(
            pod["spec"][field][i]["volumeMounts"][0], stored["spec"][field][i]["volumeMounts"][0],
            "{field}[{i}] keeps its token mount"
        );
    }
    assert_eq!(pod["metadata"]["labels"]["app"], "patched");
    assert_eq!(pod["metadata"]["labels"]["sv.sharedvolume.io/consumer"], "true");
    assert_eq!(pod["metadata"]["labels"]["consumer.sv.sharedvolume.io/sv-0123456789ab"], "true");
    // The consumer pair was created, named and shaped as the operator names it.
    assert_eq!(outcome.created.len(), 1);
    let claim = &outcome.created[0].claim;
    assert_eq!(claim.metadata.name.as_deref(), Some("sv-0123456789ab-team-a"));
    assert_eq!(claim.metadata.namespace.as_deref(), Some("team-a"));
    let pv = serde_json::to_value(&outcome.created[0].volume).expect("pv");
    assert_eq!(pv["spec"]["nfs"], json!({"server": "10.96.0.10", "path": "/", "readOnly": true}));
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadOnlyMany"]));
}

#[tokio::test]
async fn recorded_004_multi_container_pod_mounts_in_each_container() {
    let outcome = review("mutate", &recorded("004-pod-create-multi-container.json")).await;
    let pod = outcome.patched.expect("patched");
    let mounts = mounts_of(&pod, "sv-0123456789ab");
    let containers: Vec<&str> = mounts.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(containers, ["init", "app", "sidecar"], "{mounts:?}");
    // The emptyDir and the token volume are kept.
    let names: Vec<&str> =
        pod["spec"]["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert!(names.contains(&"scratch") && names.iter().any(|n| n.starts_with("kube-api-access-")), "{names:?}");
}

#[tokio::test]
async fn recorded_005_existing_mounts_stay_and_both_kinds_are_mounted() {
    let outcome = review("mutate", &recorded("005-pod-create-mounts-secctx.json")).await;
    let pod = outcome.patched.expect("patched");
    assert_eq!(mounts_of(&pod, "sv-0123456789ab")[0].1, "/mnt/shared/data");
    let shared = mounts_of(&pod, "sv-c5c000000001");
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].1, "/mnt/shared/cluster");
    assert!(!shared[0].2, "a ReadWrite ClusterSharedVolume is mounted read-write");
    let before = recorded("005-pod-create-mounts-secctx.json");
    let old = before["request"]["object"]["spec"]["containers"][0]["volumeMounts"].as_array().expect("mounts").clone();
    let new = pod["spec"]["containers"][0]["volumeMounts"].as_array().expect("mounts").clone();
    assert_eq!(&new[..old.len()], &old[..], "the pod's own mounts (subPath, readOnly) are unchanged");
    assert_eq!(outcome.created.len(), 2, "team-a gets both consumer pairs");
}

#[tokio::test]
async fn recorded_003_spaces_in_the_annotation_and_a_volume_not_ready() {
    let outcome = review("mutate", &recorded("003-pod-create-annotated-sv-csv.json")).await;
    let pod = outcome.patched.expect("patched");
    for reference in ["sv-aaaaaaaaaaaa", "sv-c5c000000001"] {
        assert_eq!(mounts_of(&pod, reference).len(), 1, "{reference}");
    }
    // `b` has no reference yet: its pod volume is named after the one its uid gives.
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes").len();
    assert_eq!(volumes, 4, "token + a + b + shared");
    // `a` is created; `shared` already has its claim in team-b; `b` waits for its server.
    let claims: Vec<String> = outcome.created.iter().filter_map(|s| s.claim.metadata.name.clone()).collect();
    assert_eq!(claims, ["sv-aaaaaaaaaaaa-team-b"]);
    let warnings = outcome.response["warnings"].to_string();
    assert!(warnings.contains("SharedVolume \\\"b\\\" is not ready"), "{warnings}");
}

#[tokio::test]
async fn updates_deletes_and_plain_pods_are_left_alone() {
    for name in ["001-pod-create-plain.json", "007-pod-update-plain.json"] {
        let outcome = review("mutate", &recorded(name)).await;
        assert!(outcome.allowed() && outcome.patch().is_empty() && outcome.created.is_empty(), "{name}");
    }
    // An UPDATE of an annotated pod: no patch, no side effect.
    let mut update = with_annotations(recorded("007-pod-update-plain.json"), json!({"sharedvolume.sv": "data"}));
    update["request"]["oldObject"]["metadata"]["annotations"] = json!({"sharedvolume.sv": "data"});
    let outcome = review("mutate", &update).await;
    assert!(outcome.allowed() && outcome.patch().is_empty() && outcome.created.is_empty());
    // DELETE: `object` is null, `oldObject` is the pod; both delete reviews are allowed.
    let mut delete = recorded("002-pod-create-annotated-sv.json");
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["oldObject"] = delete["request"]["object"].clone();
    delete["request"]["object"] = Value::Null;
    delete["request"]["options"] = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "gracePeriodSeconds": 30, "propagationPolicy": "Background"});
    let outcome = review("mutate", &delete).await;
    assert!(outcome.allowed() && outcome.patch().is_empty() && outcome.created.is_empty());
}

#[tokio::test]
async fn a_dry_run_is_mutated_but_creates_nothing() {
    let mut body = recorded("002-pod-create-annotated-sv.json");
    body["request"]["dryRun"] = json!(true);
    body["request"]["options"]["dryRun"] = json!(["All"]);
    let outcome = review("mutate", &body).await;
    assert!(outcome.patched.is_some());
    assert!(outcome.created.is_empty(), "no PV/PVC on a dry run");
    // options.dryRun alone is enough.
    let mut body = recorded("002-pod-create-annotated-sv.json");
    body["request"]["options"]["dryRun"] = json!(["All"]);
    assert!(review("mutate", &body).await.created.is_empty());
}

#[tokio::test]
async fn a_generate_name_pod_from_a_controller_is_mutated() {
    let mut body = recorded("002-pod-create-annotated-sv.json");
    let request = body["request"].as_object_mut().expect("request");
    request.remove("name");
    request["userInfo"] = json!({"username": "system:serviceaccount:kube-system:replicaset-controller"});
    request["options"] = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
    let meta = body["request"]["object"]["metadata"].as_object_mut().expect("metadata");
    meta.remove("name");
    meta.insert("generateName".to_string(), json!("web-7d4b9c-"));
    let outcome = review("mutate", &body).await;
    assert_eq!(mounts_of(&outcome.patched.expect("patched"), "sv-0123456789ab").len(), 1);
}

#[tokio::test]
async fn reinvocation_leaves_a_mutated_pod_unchanged() {
    let body = recorded("005-pod-create-mounts-secctx.json");
    let first = review("mutate", &body).await;
    let mut again = body.clone();
    again["request"]["object"] = first.patched.expect("patched");
    let second = review("mutate", &again).await;
    assert!(second.allowed());
    assert!(second.patch().is_empty(), "nothing added twice: {:?}", second.patch());
}

#[tokio::test]
async fn annotations_are_read_from_metadata_never_from_last_applied() {
    let last_applied =
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"sharedvolume.sv":"data"},"name":"p"}}"#;
    let body = with_annotations(
        recorded("001-pod-create-plain.json"),
        json!({"kubectl.kubernetes.io/last-applied-configuration": last_applied}),
    );
    let outcome = review("mutate", &body).await;
    assert!(outcome.allowed() && outcome.patch().is_empty());
    // Client-side apply: both, and the annotation itself counts once.
    let body = with_annotations(
        recorded("001-pod-create-plain.json"),
        json!({"kubectl.kubernetes.io/last-applied-configuration": last_applied, "sharedvolume.sv": "data"}),
    );
    assert_eq!(review("mutate", &body).await.patch().len(), 3, "volume, mount, labels");
}

#[tokio::test]
async fn names_are_trimmed_and_merged_and_bad_names_are_refused() {
    let plain = || recorded("001-pod-create-plain.json");
    let outcome = review("mutate", &with_annotations(plain(), json!({"sharedvolume.sv": " data , ,data,, "}))).await;
    let pod = outcome.patched.expect("patched");
    assert_eq!(mounts_of(&pod, "sv-0123456789ab").len(), 1, "duplicates merged");
    let empty = review("mutate", &with_annotations(plain(), json!({"sharedvolume.sv": " , ,"}))).await;
    assert!(empty.allowed() && empty.patch().is_empty(), "only empty entries: nothing to mount");

    let case = |value: &str| with_annotations(plain(), json!({"sharedvolume.sv": value}));
    review("mutate", &case("da ta")).await.denied_with(&[
        "sharedvolume.sv",
        "\"da ta\"",
        "not a valid SharedVolume name",
    ]);
    review("mutate", &case("Data")).await.denied_with(&["\"Data\""]);
    review("mutate", &case("team-b/a")).await.denied_with(&["own namespace", "ClusterSharedVolume"]);
    review("mutate", &case("missing")).await.denied_with(&[
        "annotation sharedvolume.sv",
        "SharedVolume \"missing\"",
        "namespace \"team-a\"",
        "create it",
    ]);
    // `a` exists, but in team-b.
    review("mutate", &case("a")).await.denied_with(&["SharedVolume \"a\" does not exist in namespace \"team-a\""]);
    let many: Vec<String> = (0..500).map(|i| format!("v{i}")).collect();
    review("mutate", &case(&many.join(","))).await.denied_with(&[&format!("at most {MAX_VOLUMES_PER_POD}")]);
    review("mutate", &case("leaving")).await.denied_with(&["being deleted"]);
    let csv = with_annotations(plain(), json!({"sharedvolume.csv": "nope"}));
    review("mutate", &csv)
        .await
        .denied_with(&["annotation sharedvolume.csv", "ClusterSharedVolume \"nope\" does not exist"]);
}

#[tokio::test]
async fn a_namespace_outside_the_selector_is_refused_with_the_fix() {
    let mut body = with_annotations(recorded("001-pod-create-plain.json"), json!({"sharedvolume.csv": "shared"}));
    body["request"]["namespace"] = json!("team-c");
    body["request"]["object"]["metadata"]["namespace"] = json!("team-c");
    let outcome = review("mutate", &body).await;
    outcome.denied_with(&[
        "ClusterSharedVolume \"shared\" does not allow namespace \"team-c\"",
        "sv-fixtures",
        "label the namespace",
    ]);
    assert!(outcome.created.is_empty());
}

#[tokio::test]
async fn mount_path_conflicts_are_refused() {
    let plain = || recorded("001-pod-create-plain.json");
    let both = with_annotations(plain(), json!({"sharedvolume.sv": "data,twin"}));
    review("mutate", &both).await.denied_with(&["\"data\"", "\"twin\"", "both mount at"]);
    let mut taken = with_annotations(plain(), json!({"sharedvolume.sv": "data"}));
    taken["request"]["object"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"name": "cache", "mountPath": "/mnt/shared/data"}));
    review("mutate", &taken)
        .await
        .denied_with(&["container \"app\" already mounts volume \"cache\" at \"/mnt/shared/data\""]);
}

#[tokio::test]
async fn a_pod_without_volumes_mounts_or_labels_gets_the_lists_created() {
    let mut body = with_annotations(recorded("001-pod-create-plain.json"), json!({"sharedvolume.sv": "data"}));
    let object = &mut body["request"]["object"];
    object["spec"].as_object_mut().expect("spec").remove("volumes");
    object["spec"]["containers"][0].as_object_mut().expect("container").remove("volumeMounts");
    object["metadata"].as_object_mut().expect("metadata").remove("labels");
    let pod = review("mutate", &body).await.patched.expect("patched");
    assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    assert_eq!(mounts_of(&pod, "sv-0123456789ab").len(), 1);
    assert_eq!(pod["metadata"]["labels"]["sv.sharedvolume.io/consumer"], "true");
}

#[tokio::test]
async fn other_resources_are_refused_by_name() {
    let mut body = recorded("011-sharedvolume-create-data.json");
    review("mutate", &body).await.denied_with(&["pods only", "SharedVolume"]);
    body = recorded("002-pod-create-annotated-sv.json");
    review("validate", &body).await.denied_with(&["SharedVolumes and ClusterSharedVolumes", "Pod"]);
}

#[tokio::test]
async fn volumes_are_validated_with_the_operators_rules() {
    let create = recorded("011-sharedvolume-create-data.json");
    assert!(review("validate", &create).await.allowed());
    // An invalid spec, with the operator's message.
    let mut bad = create.clone();
    bad["request"]["object"]["spec"]["mountPath"] = json!("relative/path");
    let outcome = review("validate", &bad).await;
    outcome.denied_with(&["SharedVolume \"data\" is invalid", "spec.mountPath", "absolute path"]);
    assert_eq!(outcome.response["status"]["code"], 422);
    // Immutable fields.
    let mut update = recorded("012-sharedvolume-update-data.json");
    assert!(review("validate", &update).await.allowed(), "syncInterval may change");
    update["request"]["object"]["spec"]["mountPath"] = json!("/elsewhere");
    review("validate", &update).await.denied_with(&["spec.mountPath: Invalid value: field is immutable"]);
    // The Go project's no-source example: accepted, with warnings.
    let mut no_source = create.clone();
    no_source["request"]["object"]["spec"].as_object_mut().expect("spec").remove("source");
    let outcome = review("validate", &no_source).await;
    assert!(outcome.allowed(), "{:#}", outcome.response);
    assert!(outcome.response["warnings"].to_string().contains("spec.syncInterval has no effect"));
    // Inline credentials: a warning, and no secret in it.
    let mut inline = create.clone();
    inline["request"]["object"]["spec"]["source"]["git"]["password"] = json!("hunter2");
    inline["request"]["object"]["spec"]["source"]["git"]["user"] = json!("me");
    let outcome = review("validate", &inline).await;
    assert!(outcome.allowed());
    let warnings = outcome.response["warnings"].to_string();
    assert!(!warnings.is_empty() && warnings != "null" && !warnings.contains("hunter2"), "{warnings}");
    // A ClusterSharedVolume, and a delete (object null).
    assert!(review("validate", &recorded("014-clustersharedvolume-create-shared.json")).await.allowed());
    let mut delete = create;
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["oldObject"] = delete["request"]["object"].take();
    assert!(review("validate", &delete).await.allowed());
}

/// A volume stored invalid (the webhook was down) can still get its finalizer added and removed:
/// an update is refused only for what it makes wrong, as the API server ratchets validation.
#[tokio::test]
async fn an_update_that_leaves_a_stored_error_as_it_was_is_allowed() {
    let mut update = recorded("012-sharedvolume-update-data.json");
    for side in ["object", "oldObject"] {
        update["request"][side]["spec"]["mountPath"] = json!("relative/path");
    }
    update["request"]["object"]["metadata"]["finalizers"] = json!(["sv.sharedvolume.io/finalizer"]);
    let outcome = review("validate", &update).await;
    assert!(outcome.allowed(), "{:#}", outcome.response);
    let warnings = outcome.response["warnings"].to_string();
    assert!(warnings.contains("was stored invalid and still is") && warnings.contains("spec.mountPath"), "{warnings}");
    // Another wrong value in the same field is this update's error.
    let mut other = update.clone();
    other["request"]["object"]["spec"]["mountPath"] = json!("other/relative");
    review("validate", &other).await.denied_with(&["spec.mountPath", "other/relative"]);
    // So is a new error elsewhere; the old one is not repeated in the refusal.
    let mut new_error = update;
    new_error["request"]["object"]["spec"]["syncInterval"] = json!("soon");
    let outcome = review("validate", &new_error).await;
    outcome.denied_with(&["spec.syncInterval"]);
    assert!(!outcome.response["status"]["message"].to_string().contains("relative/path"), "{:#}", outcome.response);
}

#[tokio::test]
async fn the_answer_is_the_same_with_the_claim_already_there() {
    let mut snapshot = cluster();
    let claim = ("team-a".to_string(), "sv-0123456789ab-team-a".to_string());
    snapshot.claims.insert(claim.clone(), ClaimState::Present);
    let outcome = review_in("mutate", &recorded("002-pod-create-annotated-sv.json"), snapshot.clone()).await;
    assert!(outcome.patched.is_some());
    assert!(outcome.created.is_empty(), "an existing claim is not created again");

    // The namespace's last consumer just left and the operator is removing the claim: a pod
    // admitted now would never start, so it is refused with the way out.
    snapshot.claims.insert(claim, ClaimState::Deleting);
    let outcome = review_in("mutate", &recorded("002-pod-create-annotated-sv.json"), snapshot).await;
    outcome.denied_with(&["sv-0123456789ab-team-a", "being removed", "create the pod again"]);
}

#[tokio::test]
async fn a_server_side_apply_create_is_mutated_like_any_create() {
    // `kubectl apply --server-side`: a CREATE with fieldManager kubectl and an Apply entry.
    let mut body = recorded("002-pod-create-annotated-sv.json");
    body["request"]["options"] =
        json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"});
    body["request"]["object"]["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
    let outcome = review("mutate", &body).await;
    assert_eq!(mounts_of(&outcome.patched.expect("patched"), "sv-0123456789ab").len(), 1);
    assert_eq!(outcome.created.len(), 1);
}
