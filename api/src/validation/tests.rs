use super::*;
use crate::{StorageSpec, VolumeSpec};

fn spec(yaml: &str) -> VolumeSpec {
    serde_saphyr::from_str(yaml).expect("test spec parses")
}

const BASE: &str = r#"
mountPath: /opt/mnt/data
storageClassName: standard
storage: {capacity: 1Gi}
"#;

fn with(extra: &str) -> VolumeSpec {
    spec(&format!("{BASE}{extra}"))
}

fn sv(s: &VolumeSpec) -> Validation {
    validate_spec(VolumeKind::SharedVolume, Some("team-a"), s, None)
}

fn csv(s: &VolumeSpec) -> Validation {
    validate_spec(VolumeKind::ClusterSharedVolume, None, s, None)
}

/// Asserts exactly one error, on `field`, whose text contains `needle`.
#[track_caller]
fn only_error(v: &Validation, field: &str, needle: &str) {
    assert_eq!(v.errors.len(), 1, "expected one error on {field}, got {:#?}", v.errors);
    assert_eq!(v.errors[0].field, field, "{:#?}", v.errors);
    let text = v.errors[0].to_string();
    assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    assert!(text.starts_with(field), "{text:?} should name {field}");
}

#[test]
fn base_is_valid() {
    let v = sv(&with(""));
    assert!(v.is_valid(), "{:#?}", v.errors);
    assert!(v.warnings.is_empty());
}

#[test]
fn mount_path_rules() {
    only_error(
        &sv(&spec("storageClassName: s\nstorage: {capacity: 1Gi}\nmountPath: ''")),
        "spec.mountPath",
        "Required",
    );
    only_error(
        &sv(&spec("storageClassName: s\nstorage: {capacity: 1Gi}\nmountPath: rel/path")),
        "spec.mountPath",
        "absolute",
    );
    only_error(
        &sv(&spec("storageClassName: s\nstorage: {capacity: 1Gi}\nmountPath: /a/../b")),
        "spec.mountPath",
        "'..'",
    );
    only_error(&sv(&spec("storageClassName: s\nstorage: {capacity: 1Gi}\nmountPath: /")), "spec.mountPath", "root");
}

#[test]
fn storage_rules() {
    only_error(&sv(&spec("mountPath: /m\nstorageClassName: s")), "spec.storage", "capacity");
    only_error(
        &sv(&spec("mountPath: /m\nstorageClassName: s\nstorage: {capacity: lots}")),
        "spec.storage.capacity",
        "512Mi",
    );
    only_error(
        &sv(&spec("mountPath: /m\nstorageClassName: s\nstorage: {capacity: '0'}")),
        "spec.storage.capacity",
        "greater than zero",
    );
    only_error(
        &sv(&spec("mountPath: /m\nstorageClassName: s\nstorage: {capacity: 1Gi, accessMode: ReadWriteMany}")),
        "spec.storage.accessMode",
        "\"ReadWrite\" and \"ReadOnly\"",
    );
}

#[test]
fn storage_class_required_only_for_managed_server() {
    let managed = spec("mountPath: /m\nstorage: {capacity: 1Gi}");
    only_error(&sv(&managed), "spec.storageClassName", "nfsServer.url");
    let external = spec("mountPath: /m\nstorage: {capacity: 1Gi}\nnfsServer: {url: nfs.example.com}");
    assert!(sv(&external).is_valid());
    let by_service = spec("mountPath: /m\nstorage: {capacity: 1Gi}\nnfsServer: {name: nfs-x, namespace: storage}");
    assert!(sv(&by_service).is_valid());
    let image_only = spec("mountPath: /m\nstorage: {capacity: 1Gi}\nnfsServer: {image: 'my/nfs:1'}");
    only_error(&sv(&image_only), "spec.storageClassName", "Required");
}

#[test]
fn nfs_server_rules() {
    only_error(&sv(&with("nfsServer: {url: 'nfs://host/x'}")), "spec.nfsServer.url", "without a scheme");
    only_error(&sv(&with("nfsServer: {url: 'host/x'}")), "spec.nfsServer.url", "nfsServer.path");
    only_error(&sv(&with("nfsServer: {url: host, image: 'x/y:1'}")), "spec.nfsServer.image", "managed server");
    only_error(&sv(&with("nfsServer: {url: host, path: exports}")), "spec.nfsServer.path", "absolute");
    only_error(&sv(&with("nfsServer: {namespace: storage}")), "spec.nfsServer.namespace", "nfsServer.name");
    assert!(sv(&with("nfsServer: {url: '10.0.0.5', path: /exports}")).is_valid());
}

#[test]
fn source_has_at_most_one_type() {
    let s = with(
        r#"
source:
  git: {url: "https://example.com/r.git"}
  http: {url: "https://example.com/f"}
"#,
    );
    only_error(&sv(&s), "spec.source", "found git and http");
}

#[test]
fn empty_source_counts_as_none() {
    assert!(sv(&with("source: {}")).is_valid());
    // The Go project's no-source example sets both: accepted, with a warning for each.
    let v = sv(&with("source: {}\nsyncInterval: 1m\nsyncTimeout: 30s"));
    assert!(v.is_valid(), "{:#?}", v.errors);
    assert_eq!(v.warnings.len(), 2, "{:#?}", v.warnings);
    assert!(v.warnings[0].starts_with("spec.syncInterval has no effect"), "{:?}", v.warnings);
}

#[test]
fn ssh_rules() {
    only_error(&sv(&with("source: {ssh: {host: h, password: p}}")), "spec.source.ssh.path", "remote directory");
    only_error(&sv(&with("source: {ssh: {host: '', path: /d, password: p}}")), "spec.source.ssh.host", "Required");
    only_error(
        &sv(&with("source: {ssh: {host: h, path: /d}}")),
        "spec.source.ssh",
        "exactly one authentication method",
    );
    only_error(
        &sv(&with("source: {ssh: {host: h, path: /d, password: p, privateKey: k}}")),
        "spec.source.ssh",
        "keep one",
    );
    only_error(
        &sv(&with("source: {ssh: {host: h, path: /d, password: p, port: 70000}}")),
        "spec.source.ssh.port",
        "65535",
    );
    assert!(sv(&with("source: {ssh: {host: h, path: /d, passwordFromSecret: {name: s, key: k}}}")).is_valid());
}

#[test]
fn git_rules() {
    only_error(
        &sv(&with("source: {git: {url: 'https://h/r.git', password: p}}")),
        "spec.source.git.user",
        "set git.user",
    );
    only_error(
        &sv(&with(
            "source: {git: {url: 'https://h/r.git', user: u, password: p, passwordFromSecret: {name: s, key: k}}}",
        )),
        "spec.source.git.password",
        "only one of password or passwordFromSecret",
    );
    only_error(
        &sv(&with("source: {git: {url: 'https://h/r.git', privateKey: k}}")),
        "spec.source.git.privateKey",
        "SSH URL",
    );
    only_error(
        &sv(&with("source: {git: {url: 'git@h:r.git', user: u, password: p}}")),
        "spec.source.git.password",
        "https://",
    );
    only_error(&sv(&with("source: {git: {url: 'ftp://h/r.git'}}")), "spec.source.git.url", "not supported");
    only_error(&sv(&with("source: {git: {url: 'https://u:p@h/r.git'}}")), "spec.source.git.url", "credentials");
    only_error(
        &sv(&with("source: {git: {url: 'https://h/r.git', branch: 'a..b'}}")),
        "spec.source.git.branch",
        "branch",
    );
    assert!(sv(&with("source: {git: {url: 'git@h:r.git', privateKeyFromSecret: {name: s, key: k}}}")).is_valid());
}

#[test]
fn s3_rules() {
    let v = sv(&with("source: {s3: {bucketName: b1b, accessKey: a, secretKey: s}}"));
    let fields: Vec<&str> = v.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.source.s3.endpointUrl", "spec.source.s3.region"]);
    only_error(
        &sv(&with("source: {s3: {endpointUrl: 'https://s3', bucketName: bkt, region: r, secretKey: s}}")),
        "spec.source.s3.accessKeyFromSecret",
        "one of accessKey or accessKeyFromSecret",
    );
    only_error(
        &sv(&with(
            "source: {s3: {endpointUrl: 'https://s3', bucketName: bkt, region: r, accessKey: a, secretKey: s, \
             secretKeyFromSecret: {name: n, key: k}}}",
        )),
        "spec.source.s3.secretKey",
        "only one of secretKey or secretKeyFromSecret",
    );
    only_error(
        &sv(&with(
            "source: {s3: {endpointUrl: 'https://s3', bucketName: Bad_Bucket, region: r, accessKey: a, secretKey: s}}",
        )),
        "spec.source.s3.bucketName",
        "3-63",
    );
}

#[test]
fn secret_namespace_forbidden_on_sv_required_on_csv() {
    let with_ns =
        with("source: {git: {url: 'git@h:r.git', privateKeyFromSecret: {name: s, key: k, namespace: other}}}");
    only_error(&sv(&with_ns), "spec.source.git.privateKeyFromSecret.namespace", "own namespace");
    assert!(csv(&with_ns).is_valid());
    let without_ns = with("source: {git: {url: 'git@h:r.git', privateKeyFromSecret: {name: s, key: k}}}");
    only_error(&csv(&without_ns), "spec.source.git.privateKeyFromSecret.namespace", "set namespace");
    assert!(sv(&without_ns).is_valid());
}

#[test]
fn durations() {
    let src = "source: {http: {url: 'https://h/f'}}\n";
    only_error(&sv(&with(&format!("{src}syncInterval: soon"))), "spec.syncInterval", "30s, 5m");
    only_error(
        &sv(&with(&format!("{src}syncInterval: 1m\nsyncTimeout: 1m"))),
        "spec.syncTimeout",
        "smaller than syncInterval 1m",
    );
    only_error(&sv(&with(&format!("{src}syncTimeout: 5m"))), "spec.syncTimeout", "1m (the default)");
    only_error(&sv(&with(&format!("{src}syncInterval: 500ms"))), "spec.syncInterval", "at least 1s");
    assert!(sv(&with(&format!("{src}syncInterval: 1d\nsyncTimeout: 2h"))).is_valid());
    assert!(sv(&with(&format!("{src}syncInterval: 30s"))).is_valid());
}

#[test]
fn sync_fields_without_a_source_are_warned_about_not_refused() {
    let v = sv(&with("syncInterval: 1m\nsyncTimeout: 30s"));
    assert!(v.is_valid(), "{:#?}", v.errors);
    let fields: Vec<&str> = v.warnings.iter().filter_map(|w| w.split(' ').next()).collect();
    assert_eq!(fields, ["spec.syncInterval", "spec.syncTimeout"]);
}

#[test]
fn effective_schedule_defaults() {
    let src = "source: {http: {url: 'https://h/f'}}\n";
    let s = effective_sync(&with(src)).expect("source set");
    assert_eq!(s.interval, Duration::from_secs(60));
    assert_eq!(s.timeout, Duration::from_secs(30));
    let s = effective_sync(&with(&format!("{src}syncInterval: 1h"))).expect("source set");
    assert_eq!(s.timeout, Duration::from_secs(120));
    assert_eq!(effective_sync(&with("")), None);
}

#[test]
fn resource_namespace_of_sv_must_be_its_own() {
    only_error(&sv(&with("resourceNamespace: other")), "spec.resourceNamespace", "own namespace");
    assert!(sv(&with("resourceNamespace: team-a")).is_valid());
    assert!(csv(&with("resourceNamespace: other")).is_valid());
}

#[test]
fn reference_value_shape() {
    only_error(&sv(&with("referenceValue: Not_Valid")), "spec.referenceValue", "derives one");
    assert!(sv(&with("referenceValue: sv-goazfn8g1e50")).is_valid());
}

#[test]
fn immutable_fields() {
    let old = with("source: {http: {url: 'https://h/f'}}\nreferenceValue: sv-aaaaaaaaaaaa");
    let mut new = old.clone();
    new.mount_path = "/elsewhere".to_string();
    new.storage = Some(StorageSpec { capacity: "2Gi".to_string(), access_mode: None });
    new.source = with("source: {git: {url: 'https://h/r.git'}}").source;
    new.sync_interval = Some("5m".to_string());
    let v = validate_update(VolumeKind::SharedVolume, Some("team-a"), &old, &new, None);
    let fields: Vec<&str> = v.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.mountPath", "spec.storage"]);
    assert!(v.errors[0].to_string().contains("field is immutable"));

    let mut cleared = old.clone();
    cleared.reference_value = Some("sv-bbbbbbbbbbbb".to_string());
    let v = validate_update(VolumeKind::SharedVolume, Some("team-a"), &old, &cleared, None);
    only_error(&v, "spec.referenceValue", "immutable");

    let mut unset = old.clone();
    unset.reference_value = None;
    let set = old.clone();
    assert!(validate_update(VolumeKind::SharedVolume, Some("team-a"), &unset, &set, None).is_valid());
}

#[test]
fn inline_credentials_warn() {
    let v = sv(&with("source: {ssh: {host: h, path: /d, password: p}}"));
    assert!(v.is_valid());
    assert_eq!(v.warnings.len(), 1);
    assert!(v.warnings[0].contains("passwordFromSecret"));
}

#[test]
fn summary_joins_like_the_api_server() {
    let v = sv(&spec("mountPath: rel\nstorage: {capacity: x}"));
    let summary = v.summary();
    assert!(summary.starts_with('[') && summary.ends_with(']'), "{summary}");
    assert!(summary.contains("spec.mountPath: Invalid value"));
    assert!(summary.contains("spec.storageClassName: Required value"));
}

#[test]
fn namespace_selector_operators() {
    let s = with("");
    let sel: LabelSelector =
        serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
            .expect("selector");
    let v = validate_spec(VolumeKind::ClusterSharedVolume, None, &s, Some(&sel));
    only_error(&v, "spec.namespaceSelector.matchExpressions[0].operator", "In, NotIn");
}

/// No message of validation echoes a credential from a URL, whatever the scheme or field.
#[test]
fn credentials_in_urls_never_reach_a_message() {
    let cases = [
        "source: {git: {url: 'ftp://alice:s3cr3tpw@h/r.git'}}",
        "source: {git: {url: 'ssh://alice:s3cr3tpw@h/r.git'}}",
        "source: {git: {url: 'https://alice:s3cr3tpw@h/r.git'}}",
        "source: {git: {url: 'weird://alice:s3cr3tpw@'}}",
        "source: {http: {url: 'ftp://alice:s3cr3tpw@h/f.tar'}}",
        "source: {http: {url: 'https://alice:s3cr3tpw@h/f.tar'}}",
        "source: {s3: {endpointUrl: 'ftp://alice:s3cr3tpw@h', bucketName: b, region: r, accessKey: a, secretKey: k}}",
        "source: {s3: {endpointUrl: 'http://alice:s3cr3tpw@h', bucketName: b, region: r, accessKey: a, secretKey: k}}",
        "nfsServer: {url: 'nfs://alice:s3cr3tpw@h/x'}",
    ];
    for case in cases {
        let v = sv(&with(case));
        let text = format!("{} {:?}", v.summary(), v.warnings);
        assert!(!text.contains("s3cr3tpw"), "{case}: {text}");
        assert!(!text.contains("alice:"), "{case}: {text}");
    }
    // A password in an ssh:// git URL is refused, as in an https:// one; a user alone is fine.
    only_error(&sv(&with("source: {git: {url: 'ssh://alice:pw@h/r.git'}}")), "spec.source.git.url", "password");
    assert!(sv(&with("source: {git: {url: 'ssh://git@h/r.git'}}")).is_valid());
}

#[test]
fn nfs_identity_annotations() {
    use crate::{NFS_ANON_UID_ANNOTATION, NFS_SQUASH_ANNOTATION};
    use std::collections::BTreeMap;
    let none = BTreeMap::new();
    assert_eq!(NfsIdentity::of(&none), NfsIdentity { squash: "root", anon_uid: 65534, anon_gid: 65534 });
    assert!(validate_nfs_annotations(&none).is_empty());
    let set = BTreeMap::from([
        (NFS_SQUASH_ANNOTATION.to_string(), "all".to_string()),
        (NFS_ANON_UID_ANNOTATION.to_string(), "1000".to_string()),
    ]);
    assert_eq!(NfsIdentity::of(&set), NfsIdentity { squash: "all", anon_uid: 1000, anon_gid: 65534 });
    let bad = BTreeMap::from([
        (NFS_SQUASH_ANNOTATION.to_string(), "everyone".to_string()),
        (NFS_ANON_UID_ANNOTATION.to_string(), "-1".to_string()),
    ]);
    let errors = validate_nfs_annotations(&bad);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].to_string().starts_with("metadata.annotations[sv.sharedvolume.io/nfs-squash]"), "{}", errors[0]);
    assert!(errors[1].to_string().contains("numeric id"), "{}", errors[1]);
}
