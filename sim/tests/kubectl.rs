//! `kubectl` as an outside client of the simulated API server on loopback: apply the project's
//! CRDs and examples, get them (table and YAML), delete them.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_and_deletes_the_crds_and_examples() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        common::skip("kubectl is not installed");
        return;
    }
    let sim = common::start_cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: \"http://{}\"}}\n\
             users:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim, namespace: default}}\n\
             current-context: sim\n",
            sim.address
        ),
    )
    .expect("kubeconfig");

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
