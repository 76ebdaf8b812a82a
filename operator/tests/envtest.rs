//! The operator against a real API server. Runs where `SV_ENVTEST_ASSETS` names a folder holding
//! `kube-apiserver` and `etcd` (as `setup-envtest` installs them); otherwise it says it skipped.
//!
//! There is no controller-manager or kubelet here, so StatefulSets get no pods: the check is that
//! every example volume gets its finalizer, reference value, children, status and Events, and that
//! deleting one removes everything it created.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use sv_operator::api::{SharedVolume, crds};
use sv_operator::clock::SystemClock;
use sv_operator::controller::leader::LeaderConfig;
use sv_operator::controller::metrics::Metrics;
use sv_operator::controller::{RunOptions, run};
use sv_operator::manifests::{self, Manifest};
use sv_operator::plan::Settings;
use sv_operator::telemetry::Health;
use tokio_util::sync::CancellationToken;

/// A throwaway etcd + kube-apiserver on loopback, stopped on drop.
struct ControlPlane {
    processes: Vec<Child>,
    dir: PathBuf,
    url: String,
    token: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl ControlPlane {
    fn start(assets: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("sv-envtest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).expect("temp dir");
        let token = "sv-envtest-admin-token".to_string();
        std::fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,system:masters\n")).expect("tokens");
        let key = dir.join("sa.pem");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genrsa failed");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!("--service-account-signing-key-file={}", key.display()))
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kube-apiserver starts");
        ControlPlane { processes: vec![etcd, apiserver], dir, url: format!("https://127.0.0.1:{api_port}"), token }
    }

    fn client(&self) -> Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        Client::try_from(config).expect("client")
    }
}

/// Polls `check` every 250 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_reconcile_against_a_real_api_server() {
    let Some(assets) = std::env::var_os("SV_ENVTEST_ASSETS") else {
        eprintln!("skipped: set SV_ENVTEST_ASSETS to a folder with kube-apiserver and etcd to run this test");
        return;
    };
    let plane = ControlPlane::start(Path::new(&assets));
    let client = plane.client();
    eventually("the API server to be ready", Duration::from_secs(60), || {
        let client = client.clone();
        async move { client.apiserver_version().await.is_ok() }
    })
    .await;

    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        crd_api.create(&PostParams::default(), &crd).await.expect("CRD created");
    }
    for crd in crds() {
        let name = crd.name_any();
        eventually("the CRDs to be established", Duration::from_secs(30), || {
            let api = crd_api.clone();
            let name = name.clone();
            async move {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            }
        })
        .await;
    }
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
