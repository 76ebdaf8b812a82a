//! `sv-sim serve` as a user meets it: the binary started as its own process, then `kubectl` and
//! `nfs-ls` from outside, as the README tells a newcomer: install with `kubectl apply -k deploy/`,
//! apply an example, watch it go Ready, list the synced files over NFS, run an annotated pod,
//! delete everything, stop the server with SIGTERM.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::served::{Served, text};

fn tools_present() -> bool {
    for (tool, arg) in [("kubectl", "version"), ("nfs-ls", "--help")] {
        if Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            common::skip(&format!("{tool} is not installed (ci/install-test-deps.sh installs it)"));
            return false;
        }
    }
    true
}

/// Lists pods with kube-rs through `kubeconfig`, as its user and then with the user's token
/// removed.
fn list_pods(kubeconfig: &Path) -> (Result<(), String>, Result<(), String>) {
    use k8s_openapi::api::core::v1::Pod;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    sv_operator::install_crypto_provider();
    let list = |anonymous: bool| {
        runtime.block_on(async {
            let mut config = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
            if anonymous {
                for user in &mut config.auth_infos {
                    user.auth_info = Some(Default::default());
                }
            }
            let config =
                kube::Config::from_custom_kubeconfig(config, &Default::default()).await.map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
            pods.list(&Default::default()).await.map(|_| ()).map_err(|e| e.to_string())
        })
    };
    (list(false), list(true))
}

/// The port in an export line's `nfs://127.0.0.1//?nfsport=P&mountport=P`.
fn export_port(line: &str) -> u16 {
    let (_, rest) = line.split_once("nfsport=").unwrap_or_else(|| panic!("no port in {line:?}"));
    rest.split('&').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"))
}

fn nfs_tool(tool: &str, port: u16, path: &str) -> String {
    let url = format!("nfs://127.0.0.1//{path}?nfsport={port}&mountport={port}");
    let output = Command::new("timeout").arg("60").arg(tool).arg(&url).output().expect("run the libnfs tool");
    assert!(output.status.success(), "{tool} {url} failed:\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_newcomer_installs_with_kubectl_and_reads_a_volume_over_nfs() {
    if !tools_present() {
        return;
    }
    let mut served = Served::start();
    let kubeconfig_line = served.line("kubeconfig:", Duration::from_secs(60));
    assert!(kubeconfig_line.contains(&served.kubeconfig.display().to_string()), "{kubeconfig_line}");

    // The kubeconfig works for any client (here kube-rs); without its user's token a request is
    // anonymous, and RBAC refuses it.
    let written = std::fs::read_to_string(&served.kubeconfig).expect("kubeconfig");
    assert!(written.contains("server: https://127.0.0.1:"), "kubectl sends credentials only over TLS:\n{written}");
    let (admin, anonymous) = list_pods(&served.kubeconfig);
    assert!(admin.is_ok(), "the kubeconfig's user lists pods: {admin:?}");
    let refused = anonymous.expect_err("an anonymous request was answered");
    assert!(refused.contains("403") && refused.contains("system:anonymous"), "{refused}");

    // kubectl's TokenRequest: a ServiceAccount's token, which then authenticates as it.
    let token = served.ok(&["create", "token", "default", "--namespace=default", "--duration=10m"]);
    let as_account = served.kubectl(&["get", "pods", "--namespace=default", &format!("--token={}", token.trim())]);
    assert!(
        text(&as_account).contains(r#"User "system:serviceaccount:default:default" cannot list resource "pods""#),
        "{}",
        text(&as_account)
    );

    let nodes = served.ok(&["get", "nodes"]);
    assert_eq!(nodes.matches(" Ready ").count(), 3, "three Ready nodes:\n{nodes}");

    // Install as on a cluster; the kubelets start the operator and the webhook from the images.
    let installed = served.ok(&["apply", "-k", "deploy/"]);
    assert!(installed.contains("deployment.apps/sharedvolume-operator created"), "{installed}");
    let namespace = "--namespace=shared-volume-controller-system";
    served.ok(&["wait", namespace, "--for=condition=Available", "deployment", "--all", "--timeout=120s"]);

    served.ok(&["apply", "-f", "deploy/examples/13-http.yaml"]);
    served.ok(&["wait", "--for=jsonpath={.status.phase}=Ready", "sv/http-sv", "csv/http-csv", "--timeout=180s"]);
    let listed = served.ok(&["get", "sv,csv", "-A"]);
    assert!(listed.contains("http-sv") && listed.contains("Ready"), "{listed}");
    // What the README shows: a watch printed with the CRD's columns (the server ends it).
    let watched = served.ok(&["get", "sv", "-A", "-w", "--request-timeout=3s"]);
    let header = watched.lines().next().unwrap_or_default();
    assert!(header.contains("PHASE") && header.contains("NFS ADDRESS"), "a Table watch:\n{watched}");
    assert!(watched.lines().any(|l| l.contains("http-sv") && l.contains("Ready")), "{watched}");

    // The synced file, through the real NFS server, with a third-party client on this machine.
    let port = export_port(&served.line("export of SharedVolume default/http-sv", Duration::from_secs(60)));
    let files = nfs_tool("nfs-ls", port, "");
    assert!(files.contains("README.md"), "nfs-ls lists the synced file:\n{files}");
    let content = nfs_tool("nfs-cat", port, "README.md");
    assert!(content.contains("raw.githubusercontent.com/distribution/distribution"), "{content}");

    // An annotated pod gets the volume from the webhook, and the kubelet runs it.
    served.ok(&["apply", "-f", "deploy/examples/pods/03-sv-single.yaml"]);
    served.ok(&["wait", "--for=condition=Ready", "pod/sv-single", "--timeout=120s"]);
    let pod =
        served.ok(&["get", "pod", "sv-single", "-o", "jsonpath={.spec.volumes}{.spec.containers[0].volumeMounts}"]);
    assert!(pod.contains("persistentVolumeClaim") && pod.contains("/opt/mnt/http"), "the pod's volumes:\n{pod}");

    // Uninstalling the volumes closes their exports.
    served.ok(&["delete", "-f", "deploy/examples/pods/03-sv-single.yaml", "--timeout=120s"]);
    served.ok(&["delete", "-f", "deploy/examples/13-http.yaml", "--timeout=180s"]);
    served.line("export of SharedVolume default/http-sv closed", Duration::from_secs(60));

    // SIGTERM stops it cleanly.
    let pid = served.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let mut child = std::mem::replace(&mut served.child, Command::new("true").spawn().expect("true"));
    let (send, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait());
    });
    let status = exited.recv_timeout(Duration::from_secs(60)).expect("sv-sim serve stops within a minute of SIGTERM");
    assert!(status.expect("wait").success(), "sv-sim serve exits 0 on SIGTERM");
}
