//! The public contract: committed CRDs equal the generated ones, the examples parse and validate,
//! and broken variants of them fail with messages that name the field.

use std::path::{Path, PathBuf};

use sv_operator::api::{ClusterSharedVolume, SharedVolume, Volume, VolumeKind, crds, crds_yaml, parse_volume_list};
use sv_operator::manifests::{self, Manifest};
use sv_operator::validation::validate_spec;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crds_equal_generated() {
    let committed =
        std::fs::read_to_string(repo().join("deploy/base/crds/sharedvolume-crds.yaml")).expect("committed CRDs");
    let generated = crds_yaml().expect("CRDs serialize");
    assert!(
        committed == generated,
        "deploy/base/crds/sharedvolume-crds.yaml is stale; regenerate it with `cargo run -p sv-operator -- crd > deploy/base/crds/sharedvolume-crds.yaml`"
    );
}

#[test]
fn crds_keep_the_go_api_names() {
    let [sv, csv] = <[_; 2]>::try_from(crds()).expect("two CRDs");
    assert_eq!(sv.metadata.name.as_deref(), Some("sharedvolumes.sv.sharedvolume.io"));
    assert_eq!(sv.spec.scope, "Namespaced");
    assert_eq!(sv.spec.names.short_names, Some(vec!["sv".to_string()]));
    assert_eq!(csv.metadata.name.as_deref(), Some("clustersharedvolumes.sv.sharedvolume.io"));
    assert_eq!(csv.spec.scope, "Cluster");
    assert_eq!(csv.spec.names.short_names, Some(vec!["csv".to_string()]));
    for crd in [&sv, &csv] {
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Phase", ".status.phase"),
                ("NFS Address", ".status.nfsServerAddress"),
                ("Mount Path", ".spec.mountPath"),
                ("SyncInterval", ".spec.syncInterval"),
                ("Capacity", ".spec.storage.capacity"),
                ("Last Sync", ".status.sync.lastSyncTime"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
        let schema = serde_json::to_value(&version.schema).expect("schema");
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in [
            "mountPath",
            "storage",
            "storageClassName",
            "syncInterval",
            "syncTimeout",
            "nfsServer",
            "resourceNamespace",
            "referenceValue",
            "source",
        ] {
            assert!(spec.get(field).is_some(), "spec.{field} missing from {}", crd.spec.names.kind);
        }
        let source = &spec["source"]["properties"];
        let git: Vec<&String> = source["git"]["properties"].as_object().expect("git").keys().collect();
        assert_eq!(
            git,
            ["branch", "password", "passwordFromSecret", "privateKey", "privateKeyFromSecret", "url", "user"]
        );
        let ssh: Vec<&String> = source["ssh"]["properties"].as_object().expect("ssh").keys().collect();
        assert_eq!(
            ssh,
            ["host", "password", "passwordFromSecret", "path", "port", "privateKey", "privateKeyFromSecret", "user"]
        );
        let s3: Vec<&String> = source["s3"]["properties"].as_object().expect("s3").keys().collect();
        assert_eq!(
            s3,
            [
                "accessKey",
                "accessKeyFromSecret",
                "bucketName",
                "endpointUrl",
                "path",
                "region",
                "secretKey",
                "secretKeyFromSecret"
            ]
        );
        assert_eq!(spec["storage"]["properties"]["accessMode"]["default"], "ReadOnly");
        assert_eq!(source["ssh"]["properties"]["port"]["default"], 22);
        assert_eq!(spec["nfsServer"]["properties"]["path"]["default"], "/");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in [
            "phase",
            "message",
            "nfsServerAddress",
            "persistentVolumeClaimName",
            "persistentVolumeName",
            "serviceName",
            "observedGeneration",
            "conditions",
            "sync",
        ] {
            assert!(status.get(field).is_some(), "status.{field} missing");
        }
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    }
}

fn example_manifests() -> Vec<(PathBuf, Manifest)> {
    manifests::load(&repo().join("deploy/examples")).expect("examples load")
}

#[test]
fn every_example_parses_and_validates() {
    let mut volumes = 0;
    let mut pods = 0;
    for (file, manifest) in example_manifests() {
        let result = match &manifest {
            Manifest::SharedVolume(v) => {
                validate_spec(VolumeKind::SharedVolume, Some("default"), v.volume_spec(), None)
            }
            Manifest::ClusterSharedVolume(v) => {
                validate_spec(VolumeKind::ClusterSharedVolume, None, v.volume_spec(), v.namespace_selector())
            }
            Manifest::Pod(_) => {
                pods += 1;
                continue;
            }
            _ => continue,
        };
        volumes += 1;
        assert!(result.is_valid(), "{}: {}", file.display(), result.summary());
    }
    assert_eq!(volumes, 29, "every example volume is checked");
    assert_eq!(pods, 5, "every example pod is loaded");
}

#[test]
fn examples_cover_every_case_of_the_go_project() {
    let all = example_manifests();
    let spec_of = |name: &str| {
        all.iter()
            .find_map(|(_, m)| match m {
                Manifest::SharedVolume(v) if v.metadata.name.as_deref() == Some(name) => Some(v.volume_spec().clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("example {name} exists"))
    };
    assert!(spec_of("nosource-sv").source.is_none());
    let git = |n: &str| spec_of(n).source.and_then(|s| s.git).expect("git source");
    assert!(git("git-public-sv").password.is_none());
    assert!(git("git-basic-sv").password.is_some());
    assert!(git("git-basic-secret-sv").password_from_secret.is_some());
    assert!(git("git-key-sv").private_key.is_some());
    assert!(git("git-key-secret-sv").private_key_from_secret.is_some());
    let ssh = |n: &str| spec_of(n).source.and_then(|s| s.ssh).expect("ssh source");
    assert!(ssh("ssh-password-sv").password.is_some());
    assert!(ssh("ssh-password-secret-sv").password_from_secret.is_some());
    assert!(ssh("ssh-key-sv").private_key.is_some());
    assert!(ssh("ssh-key-secret-sv").private_key_from_secret.is_some());
    let s3 = |n: &str| spec_of(n).source.and_then(|s| s.s3).expect("s3 source");
    assert!(s3("s3-sv").access_key.is_some());
    assert!(s3("s3-secret-sv").access_key_from_secret.is_some());
    assert!(spec_of("http-sv").source.and_then(|s| s.http).is_some());
    assert!(spec_of("http-external-nfs-sv").nfs_server.and_then(|n| n.url).is_some());
    let multi = all.iter().find_map(|(_, m)| match m {
        Manifest::Pod(p) if p.metadata.name.as_deref() == Some("csv-multi") => p.metadata.annotations.clone(),
        _ => None,
    });
    let csvs = multi.and_then(|a| a.get("sharedvolume.csv").cloned()).expect("annotation");
    assert_eq!(parse_volume_list(&csvs), ["http-csv", "git-public-csv", "nosource-csv"]);
}

/// Each broken variant of an example: (example name, mutation as a JSON merge patch of the spec,
/// expected field, expected words).
const BROKEN: &[(&str, &str, &str, &str)] = &[
    ("git-public-sv", r#"{"source": {"http": {"url": "https://x/y"}}}"#, "spec.source", "at most one source type"),
    ("ssh-password-sv", r#"{"source": {"ssh": {"path": null}}}"#, "spec.source.ssh.path", "Required value"),
    (
        "ssh-password-sv",
        r#"{"source": {"ssh": {"privateKey": "k"}}}"#,
        "spec.source.ssh",
        "exactly one authentication method",
    ),
    ("ssh-password-sv", r#"{"source": {"ssh": {"password": null}}}"#, "spec.source.ssh", "set one"),
    ("git-basic-sv", r#"{"source": {"git": {"user": null}}}"#, "spec.source.git.user", "set git.user"),
    ("s3-sv", r#"{"source": {"s3": {"region": null}}}"#, "spec.source.s3.region", "Required value"),
    ("s3-sv", r#"{"source": {"s3": {"accessKey": null}}}"#, "spec.source.s3.accessKeyFromSecret", "one of accessKey"),
    ("s3-secret-sv", r#"{"source": {"s3": {"secretKey": "inline"}}}"#, "spec.source.s3.secretKey", "only one of"),
    (
        "s3-secret-sv",
        r#"{"source": {"s3": {"accessKeyFromSecret": {"namespace": "x"}}}}"#,
        "spec.source.s3.accessKeyFromSecret.namespace",
        "Forbidden",
    ),
    ("http-sv", r#"{"syncTimeout": "2m"}"#, "spec.syncTimeout", "smaller than syncInterval"),
    ("http-sv", r#"{"syncInterval": "every minute"}"#, "spec.syncInterval", "not a duration"),
    ("nosource-sv", r#"{"storageClassName": null}"#, "spec.storageClassName", "Required value"),
    ("nosource-sv", r#"{"mountPath": "opt/mnt"}"#, "spec.mountPath", "absolute"),
    ("nosource-sv", r#"{"storage": {"capacity": "two gigs"}}"#, "spec.storage.capacity", "quantity"),
];

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[test]
fn broken_examples_fail_with_the_right_message() {
    let all = example_manifests();
    for (name, patch, field, words) in BROKEN {
        let sv = all
            .iter()
            .find_map(|(_, m)| match m {
                Manifest::SharedVolume(v) if v.metadata.name.as_deref() == Some(*name) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("example {name}"));
        let mut spec = serde_json::to_value(sv.volume_spec()).expect("spec");
        merge(&mut spec, &serde_json::from_str(patch).expect("patch"));
        let spec = serde_json::from_value(spec).expect("patched spec parses");
        let result = validate_spec(VolumeKind::SharedVolume, Some("default"), &spec, None);
        let found = result.errors.iter().find(|e| e.field == *field);
        let error = found.unwrap_or_else(|| panic!("{name} + {patch}: no error on {field}: {}", result.summary()));
        assert!(error.to_string().contains(words), "{name} + {patch}: {error}");
    }
}

#[test]
fn the_go_no_source_example_with_sync_settings_is_accepted_with_a_warning() {
    // The Go project's own no-source example sets both fields: its manifests must apply unchanged.
    let all = example_manifests();
    let sv = all
        .iter()
        .find_map(|(_, m)| match m {
            Manifest::SharedVolume(v) if v.metadata.name.as_deref() == Some("nosource-sv") => Some(v.clone()),
            _ => None,
        })
        .expect("nosource-sv");
    let mut spec = sv.volume_spec().clone();
    spec.sync_interval = Some("60s".into());
    spec.sync_timeout = Some("30s".into());
    let result = validate_spec(VolumeKind::SharedVolume, Some("default"), &spec, None);
    assert!(result.is_valid(), "{}", result.summary());
    assert_eq!(result.warnings.len(), 2, "{:?}", result.warnings);
}

#[test]
fn csv_selectors_need_a_namespace() {
    let all = example_manifests();
    let csv: ClusterSharedVolume = all
        .iter()
        .find_map(|(_, m)| match m {
            Manifest::ClusterSharedVolume(v) if v.metadata.name.as_deref() == Some("git-basic-secret-csv") => {
                Some(v.as_ref().clone())
            }
            _ => None,
        })
        .expect("example");
    let mut spec = csv.volume_spec().clone();
    if let Some(sel) = spec.source.as_mut().and_then(|s| s.git.as_mut()).and_then(|g| g.password_from_secret.as_mut()) {
        sel.namespace = None;
    }
    let result = validate_spec(VolumeKind::ClusterSharedVolume, None, &spec, None);
    assert_eq!(result.errors.len(), 1, "{}", result.summary());
    assert_eq!(result.errors[0].field, "spec.source.git.passwordFromSecret.namespace");
}

#[test]
fn lenient_types_accept_what_older_crds_stored() {
    // Unknown fields, the Go operator's generated nfsServer block, and odd-but-parseable values must
    // deserialize, so one stale object cannot break the watch of every volume.
    let json = serde_json::json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {"name": "old", "namespace": "default", "uid": "u1"},
        "spec": {
            "mountPath": "/opt/mnt",
            "storage": {"capacity": "1Gi", "accessMode": "ReadWriteMany"},
            "nfsServer": {"name": "nfs-sv-abc", "namespace": "default", "url": "nfs-sv-abc.default.svc.cluster.local", "path": "/"},
            "referenceValue": "sv-goazfn8g1e50",
            "source": {"ssh": {"host": "h", "port": 99999999999i64, "privateKeyFromSecret": {"name": "k", "key": "id"}}},
            "someFutureField": {"x": 1}
        },
        "status": {"phase": "CreatingResources", "unknownStatus": true}
    });
    let sv: SharedVolume = serde_json::from_value(json).expect("lenient deserialization");
    let result = validate_spec(VolumeKind::SharedVolume, Some("default"), sv.volume_spec(), None);
    assert!(!result.is_valid());
    let fields: Vec<&str> = result.errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"spec.storage.accessMode"), "{fields:?}");
    assert!(fields.contains(&"spec.source.ssh.port"), "{fields:?}");
}

#[test]
fn operator_rbac_covers_everything_it_touches() {
    use sv_operator::controller::kube_io::{OWNED_KINDS, api_resource};
    let docs = manifests::load(&repo().join("deploy/base/operator.yaml")).expect("operator manifest");
    let role = docs
        .iter()
        .find_map(|(_, m)| match m {
            Manifest::Other { kind, value, .. } if kind == "ClusterRole" => Some(value.clone()),
            _ => None,
        })
        .expect("ClusterRole");
    let allows = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().into_iter().flatten().any(|rule| {
            let has = |key: &str, want: &str| {
                rule[key].as_array().into_iter().flatten().any(|v| v.as_str() == Some(want) || v.as_str() == Some("*"))
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    for kind in OWNED_KINDS {
        let (resource, _) = api_resource(kind).expect("known kind");
        for verb in ["list", "patch", "delete"] {
            assert!(allows(&resource.group, &resource.plural, verb), "ClusterRole cannot {verb} {}", resource.plural);
        }
    }
    for (group, resource) in
        [("sv.sharedvolume.io", "sharedvolumes/status"), ("sv.sharedvolume.io", "clustersharedvolumes/status")]
    {
        assert!(allows(group, resource, "patch"));
    }
    for resource in ["pods", "nodes", "namespaces"] {
        assert!(allows("", resource, "watch"));
    }
    assert!(allows("events.k8s.io", "events", "create"));
}
