//! The operator against a real API server: an ignored test, run with `cargo test -- --ignored`
//! where `SV_ENVTEST_ASSETS` names a folder holding `kube-apiserver` and `etcd` (as
//! `setup-envtest` installs them). Ignored rather than passing when they are missing, so that a
//! run without them does not count it as tested.
//!
//! There is no controller-manager or kubelet here, so StatefulSets get no pods: the check is that
//! every example volume gets its finalizer, reference value, children, status and Events, and that
//! deleting one removes everything it created.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use prometheus_client::registry::Registry;
use sv_operator::api::SharedVolume;
use sv_operator::clock::SystemClock;
use sv_operator::controller::leader::LeaderConfig;
use sv_operator::controller::metrics::Metrics;
use sv_operator::controller::{RunOptions, run};
use sv_operator::manifests::{self, Manifest};
use sv_operator::plan::Settings;
use sv_operator::telemetry::Health;
use sv_operator::testing::{ControlPlane, eventually, install_crds};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: SV_ENVTEST_ASSETS=<folder with kube-apiserver and etcd> cargo test -- --ignored"]
async fn examples_reconcile_against_a_real_api_server() {
    let assets = std::env::var_os("SV_ENVTEST_ASSETS")
        .expect("set SV_ENVTEST_ASSETS to a folder with kube-apiserver and etcd (as setup-envtest installs them)");
    let plane = ControlPlane::start(Path::new(&assets));
    let client = plane.ready_client().await;
    install_crds(&client).await;
    let storage_class: StorageClass = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "standard"}, "provisioner": "example.com/none"}),
    )
    .expect("storage class");
    Api::<StorageClass>::all(client.clone()).create(&PostParams::default(), &storage_class).await.expect("sc");
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "shared-volume-controller-system"}}))
                .expect("ns"),
        )
        .await;

    let examples =
        manifests::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")).expect("examples");
    let mut volumes = Vec::new();
    for (_, manifest) in examples {
        match manifest {
            Manifest::Secret(secret) => {
                let api: Api<Secret> = Api::namespaced(client.clone(), "default");
                api.create(&PostParams::default(), &secret).await.expect("secret");
            }
            Manifest::SharedVolume(sv) => {
                let api: Api<SharedVolume> = Api::namespaced(client.clone(), "default");
                api.create(&PostParams::default(), &sv).await.expect("volume");
                volumes.push(sv.name_any());
            }
            _ => {}
        }
    }

    let shutdown = CancellationToken::new();
    let options = RunOptions {
        settings: Settings::default(),
        leader: Some(LeaderConfig::new("shared-volume-controller-system", "envtest-0")),
        instance: "envtest-0".to_string(),
    };
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let operator =
        tokio::spawn(run(client.clone(), options, Arc::new(SystemClock), metrics, Health::new(), shutdown.clone()));

    let svs: Api<SharedVolume> = Api::namespaced(client.clone(), "default");
    for name in &volumes {
        eventually(&format!("{name} to be reconciled"), Duration::from_secs(60), || {
            let svs = svs.clone();
            let name = name.clone();
            async move {
                svs.get(&name).await.ok().is_some_and(|sv| {
                    let status = sv.status.clone().unwrap_or_default();
                    sv.finalizers().iter().any(|f| f == "sharedvolume.sv/finalizer")
                        && sv.spec.reference_value.is_some()
                        && status.observed_generation.is_some()
                        && status.conditions.len() == 3
                })
            }
        })
        .await;
    }
    let sv = svs.get("git-public-sv").await.expect("volume");
    let reference = sv.spec.reference_value.clone().expect("reference");
    assert_eq!(sv.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"), "no kubelet runs the server");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    assert!(sts.get_opt(&format!("nfs-{reference}")).await.expect("get").is_some());
    let svc =
        Api::<Service>::namespaced(client.clone(), "default").get(&format!("nfs-{reference}")).await.expect("svc");
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    eventually("the ClusterIP on status", Duration::from_secs(30), || {
        let svs = svs.clone();
        let ip = ip.clone();
        async move {
            svs.get("git-public-sv").await.ok().and_then(|s| s.status).and_then(|s| s.nfs_server_address) == Some(ip)
        }
    })
    .await;
    let events =
        Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.expect("events");
    assert!(events.items.iter().any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("git-public-sv")));

    svs.delete("git-public-sv", &DeleteParams::default()).await.expect("delete");
    eventually("git-public-sv and its children to be gone", Duration::from_secs(60), || {
        let svs = svs.clone();
        let sts = sts.clone();
        let name = format!("nfs-{reference}");
        async move {
            svs.get_opt("git-public-sv").await.ok().flatten().is_none()
                && sts.get_opt(&name).await.ok().flatten().is_none()
        }
    })
    .await;

    shutdown.cancel();
    let _ = operator.await;
}
