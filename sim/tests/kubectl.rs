//! `kubectl` as an outside client of the simulated API server on loopback: apply the project's
//! CRDs and examples, get them (table and YAML), delete them.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    let (kubeconfig, args): (PathBuf, Vec<String>) =
        (kubeconfig.to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .current_dir(repo())
            .args(&args)
            .output()
            .expect("run kubectl")
    })
    .await
    .expect("join")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

async fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args).await;
    assert!(output.status.success(), "kubectl {args:?} failed:\n{}", text(&output));
    text(&output)
}

/// A loopback cluster, a folder, and a kubeconfig in it for kubectl; None (and a skip) where
/// kubectl is missing.
async fn cluster_for_kubectl() -> Option<(common::Loopback, tempfile::TempDir, PathBuf)> {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        common::skip("kubectl is not installed");
        return None;
    }
    let sim = common::start_cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig_for(dir.path(), sim.address);
    Some((sim, dir, kubeconfig))
}

fn kubeconfig_for(dir: &Path, address: std::net::SocketAddr) -> PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: \"http://{address}\"}}\n\
             users:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim, namespace: default}}\n\
             current-context: sim\n"
        ),
    )
    .expect("kubeconfig");
    kubeconfig
}

/// `kubectl apply` of an edited built-in sends a strategic merge patch: keyed lists merge by key,
/// so what the edit does not name survives (the webhook list kept its rules and failure policy,
/// a Deployment its other container and the server's defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_edited_built_ins_merges_keyed_lists() {
    let Some((_sim, dir, kubeconfig)) = cluster_for_kubectl().await else { return };
    let manifest = dir.path().join("objects.yaml");
    let write = |image: &str, timeout: u32, extra_env: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  replicas: 1\n  \
                 selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      \
                 containers:\n      - name: app\n        image: {image}\n        env: [{{name: A, value: '1'}}{extra_env}]\n      \
                 - name: sidecar\n        image: busybox:1.36\n---\n\
                 apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: hooks}}\nwebhooks:\n\
                 - name: pods.example.com\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Ignore\n  \
                 timeoutSeconds: {timeout}\n  clientConfig: {{url: 'https://hooks.example.com/validate'}}\n  \
                 rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [configmaps]}}]\n"
            ),
        )
        .expect("write");
    };
    let path = manifest.to_str().expect("path").to_string();
    write("nginx:1.27", 5, "");
    ok(&kubeconfig, &["apply", "-f", &path]).await;
    write("nginx:1.28", 7, ", {name: B, value: '2'}");
    let applied = ok(&kubeconfig, &["apply", "-f", &path]).await;
    assert!(applied.contains("deployment.apps/web configured") && applied.contains("hooks configured"), "{applied}");

    let deployment: serde_json::Value =
        serde_json::from_str(&ok(&kubeconfig, &["get", "deployment", "web", "-o", "json"]).await).expect("JSON");
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(2), "{containers}");
    assert_eq!(containers[0]["image"], "nginx:1.28");
    assert_eq!(containers[0]["env"], serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    assert_eq!(containers[0]["terminationMessagePath"], "/dev/termination-log", "the server's defaults survive");
    let hooks: serde_json::Value =
        serde_json::from_str(&ok(&kubeconfig, &["get", "validatingwebhookconfiguration", "hooks", "-o", "json"]).await)
            .expect("JSON");
    let hook = &hooks["webhooks"][0];
    assert_eq!(hook["timeoutSeconds"], 7);
    assert_eq!(hook["failurePolicy"], "Ignore", "{hook}");
    assert_eq!(hook["rules"][0]["resources"], serde_json::json!(["configmaps"]), "{hook}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_and_deletes_the_crds_and_examples() {
    let Some((_sim, dir, kubeconfig)) = cluster_for_kubectl().await else { return };

    let applied = ok(&kubeconfig, &["apply", "-f", "deploy/base/crds/"]).await;
    assert!(applied.contains("sharedvolumes.sv.sharedvolume.io created"), "{applied}");
    ok(
        &kubeconfig,
        &["wait", "--for", "condition=established", "--timeout=30s", "crd/sharedvolumes.sv.sharedvolume.io"],
    )
    .await;

    let applied = ok(&kubeconfig, &["apply", "-f", "deploy/examples/"]).await;
    assert!(applied.contains("sharedvolume.sv.sharedvolume.io/git-public-sv created"), "{applied}");
    let again = ok(&kubeconfig, &["apply", "-f", "deploy/examples/"]).await;
    assert!(again.contains("git-public-sv unchanged"), "a second apply changes nothing:\n{again}");

    let listed = ok(&kubeconfig, &["get", "sv,csv", "-A"]).await;
    assert!(listed.contains("PHASE") && listed.contains("MOUNT PATH"), "the CRD's printer columns:\n{listed}");
    for name in ["git-public-sv", "nosource-sv", "http-nfs-service-csv"] {
        assert!(listed.contains(name), "{name} missing from:\n{listed}");
    }
    let yaml = ok(&kubeconfig, &["get", "sv", "git-public-sv", "-o", "yaml"]).await;
    assert!(yaml.contains("kind: SharedVolume") && yaml.contains("mountPath:"), "{yaml}");
    assert!(yaml.contains("accessMode: ReadOnly"), "schema defaults are visible:\n{yaml}");

    let deleted = ok(&kubeconfig, &["delete", "-f", "deploy/examples/13-http.yaml"]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = kubectl(&kubeconfig, &["get", "sv", "http-sv"]).await;
    assert!(!gone.status.success() && text(&gone).contains("NotFound"), "{}", text(&gone));

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(&invalid, "apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata: {name: broken}\nspec: {storage: {capacity: 1Gi}}\n").expect("write");
    let refused = kubectl(&kubeconfig, &["apply", "-f", invalid.to_str().expect("path")]).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("spec.mountPath: Required value"), "{}", text(&refused));
}
