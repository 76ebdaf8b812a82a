//! Properties over arbitrary input: validation never panics, reference values are stable and
//! well-formed, every derived name is a valid DNS-1123 label.

use proptest::option;
use proptest::prelude::*;
use sv_operator::api::{
    GitSource, HttpSource, NfsServerSpec, S3Source, SecretKeySelector, SourceSpec, SshSource, StorageSpec, VolumeKind,
    VolumeSpec,
};
use sv_operator::names::{ChildNames, is_dns1123_label, reference_value_from_uid};
use sv_operator::plan::{Lookup, Observed, Settings, plan};
use sv_operator::validation::{validate_spec, validate_update};

/// Strings that hit the edge cases: empty, paths, URLs, durations, quantities, unicode, NUL.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/opt/mnt/data".to_string()),
        Just("https://example.com/r.git".to_string()),
        Just("git@host:r.git".to_string()),
        Just("1m".to_string()),
        Just("30s".to_string()),
        Just("1Gi".to_string()),
        Just("..".to_string()),
        Just("a\0b".to_string()),
        "\\PC{0,24}",
        "[a-z0-9.:/@-]{0,40}",
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn selector() -> impl Strategy<Value = Option<SecretKeySelector>> {
    option::of((text(), text(), opt_text()).prop_map(|(name, key, namespace)| SecretKeySelector {
        name,
        key,
        namespace,
    }))
}

fn source() -> impl Strategy<Value = Option<SourceSpec>> {
    let git = option::of((text(), opt_text(), opt_text(), opt_text(), opt_text(), selector(), selector()).prop_map(
        |(url, branch, user, password, private_key, password_from_secret, private_key_from_secret)| GitSource {
            url,
            branch,
            user,
            password,
            private_key,
            password_from_secret,
            private_key_from_secret,
        },
    ));
    let ssh = option::of(
        (text(), option::of(any::<i64>()), opt_text(), opt_text(), opt_text(), opt_text(), selector(), selector())
            .prop_map(
                |(host, port, user, path, password, private_key, password_from_secret, private_key_from_secret)| {
                    SshSource {
                        host,
                        port,
                        user,
                        path,
                        password,
                        private_key,
                        password_from_secret,
                        private_key_from_secret,
                    }
                },
            ),
    );
    let http = option::of(text().prop_map(|url| HttpSource { url }));
    let s3 = option::of(
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), selector(), selector()).prop_map(
            |(
                endpoint_url,
                bucket_name,
                path,
                region,
                access_key,
                secret_key,
                access_key_from_secret,
                secret_key_from_secret,
            )| {
                S3Source {
                    endpoint_url,
                    bucket_name,
                    path,
                    region,
                    access_key,
                    secret_key,
                    access_key_from_secret,
                    secret_key_from_secret,
                }
            },
        ),
    );
    option::of((git, ssh, http, s3).prop_map(|(git, ssh, http, s3)| SourceSpec { git, ssh, http, s3 }))
}

fn spec() -> impl Strategy<Value = VolumeSpec> {
    (
        text(),
        option::of((text(), opt_text()).prop_map(|(capacity, access_mode)| StorageSpec { capacity, access_mode })),
        opt_text(),
        opt_text(),
        opt_text(),
        option::of(
            (opt_text(), opt_text(), opt_text(), opt_text(), opt_text())
                .prop_map(|(name, namespace, url, image, path)| NfsServerSpec { name, namespace, url, image, path }),
        ),
        opt_text(),
        opt_text(),
        source(),
    )
        .prop_map(
            |(
                mount_path,
                storage,
                storage_class_name,
                sync_interval,
                sync_timeout,
                nfs_server,
                resource_namespace,
                reference_value,
                source,
            )| {
                VolumeSpec {
                    mount_path,
                    storage,
                    storage_class_name,
                    sync_interval,
                    sync_timeout,
                    nfs_server,
                    resource_namespace,
                    reference_value,
                    source,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validation_never_panics(a in spec(), b in spec(), cluster in any::<bool>()) {
        let kind = if cluster { VolumeKind::ClusterSharedVolume } else { VolumeKind::SharedVolume };
        let ns = (!cluster).then_some("team-a");
        let v = validate_spec(kind, ns, &a, None);
        for e in &v.errors {
            prop_assert!(e.to_string().starts_with(&e.field));
            prop_assert!(e.field.starts_with("spec"));
        }
        let _ = validate_update(kind, ns, &a, &b, None);
    }

    #[test]
    fn planning_never_panics_and_names_stay_valid(s in spec(), cluster in any::<bool>(), uid in "[a-f0-9-]{1,36}") {
        let kind = if cluster { VolumeKind::ClusterSharedVolume } else { VolumeKind::SharedVolume };
        let mut o = Observed::new(kind, "vol", (!cluster).then_some("team-a"), &uid, s);
        o.storage_class = Lookup::Found(());
        o.nfs.service_ip = Some("10.96.0.1".into());
        o.nfs.statefulset_ready = Some(1);
        let p = plan(&o, &Settings::default());
        for object in &p.objects {
            prop_assert!(is_dns1123_label(&object.key().name), "{}", object.key());
        }
    }

    #[test]
    fn reference_value_is_stable_and_well_formed(uid in "\\PC{0,64}") {
        let r = reference_value_from_uid(&uid);
        prop_assert_eq!(&r, &reference_value_from_uid(&uid));
        prop_assert_eq!(r.len(), 15);
        prop_assert!(r.starts_with("sv-"));
        prop_assert!(r[3..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[test]
    fn derived_names_are_dns_labels(uid in "\\PC{0,64}", namespace in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
        let names = ChildNames::new(reference_value_from_uid(&uid));
        for name in [
            names.nfs_server(),
            names.nfs_data_claim(),
            names.syncer(),
            names.credentials(),
            names.syncer_storage(),
            names.consumer_storage(&namespace),
        ] {
            prop_assert!(is_dns1123_label(&name), "{}", name);
        }
    }

    #[test]
    fn consumer_storage_names_do_not_collide(a in "[a-z0-9]{1,63}", b in "[a-z0-9]{1,63}") {
        prop_assume!(a != b);
        let names = ChildNames::new("sv-abcdefghijkl");
        prop_assert_ne!(names.consumer_storage(&a), names.consumer_storage(&b));
    }
}
