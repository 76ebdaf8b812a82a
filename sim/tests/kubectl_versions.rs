//! Older and newer kubectl against `sv-sim serve`: every `kubectl.1.NN` found beside `kubectl`
//! (this machine has 1.27 to 1.33; CI need not) creates a namespace (protobuf from 1.32 on),
//! applies volumes client side and server side, gets them (`-w` too), describes and deletes them.
//! kubectl 1.27–1.29 ask for the `v2beta1` discovery a v1.36 server no longer serves, and must
//! fall back to the legacy documents; 1.27 and 1.28 apply with `--validate=false` (they read the
//! OpenAPI v2 document as protobuf only, which is not served).

use std::path::PathBuf;

use crate::common::served::{Served, text};

/// The versioned kubectl binaries beside the `kubectl` on PATH (following its link).
fn versioned_kubectls() -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else { return Vec::new() };
    let Some(kubectl) = std::env::split_paths(&path).map(|dir| dir.join("kubectl")).find(|k| k.exists()) else {
        return Vec::new();
    };
    let resolved = std::fs::canonicalize(&kubectl).unwrap_or(kubectl);
    let Some(dir) = resolved.parent() else { return Vec::new() };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kubectl.1.")))
        .collect();
    found.sort();
    found
}

fn volume(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  mountPath: /data\n  storageClassName: standard\n  storage: {{capacity: 1Gi}}\n"
    )
}

#[test]
fn every_kubectl_version_at_hand_works_against_the_simulated_server() {
    let kubectls = versioned_kubectls();
    if kubectls.is_empty() {
        // Not a missing test tool: only some machines have several kubectl versions.
        eprintln!("skipped: no kubectl.1.NN beside kubectl");
        return;
    }
    let mut served = Served::start();
    served.line("kubeconfig:", std::time::Duration::from_secs(60));
    served.ok(&["apply", "-f", "deploy/base/crds/"]);
    served.ok(&["wait", "--for=condition=established", "crd/sharedvolumes.sv.sharedvolume.io", "--timeout=30s"]);
    let mut failures = Vec::new();
    for kubectl in &kubectls {
        let program = kubectl.to_string_lossy().into_owned();
        let version = program.rsplit("kubectl.").next().unwrap_or_default().replace('.', "-");
        let namespace = format!("team-{version}");
        let client = served.dir.path().join(format!("client-{version}.yaml"));
        let server = served.dir.path().join(format!("server-{version}.yaml"));
        std::fs::write(&client, volume("client", &namespace)).expect("write");
        std::fs::write(&server, volume("server", &namespace)).expect("write");
        let (client, server) = (client.to_string_lossy().into_owned(), server.to_string_lossy().into_owned());
        let ns = format!("--namespace={namespace}");
        // kubectl 1.27 and 1.28 validate an apply against the OpenAPI v2 document, which they read
        // only as protobuf: not served here (docs/sim.md), so they apply with --validate=false.
        let minor: u32 = version.rsplit('-').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let validate = if minor < 29 { "--validate=false" } else { "--validate=true" };
        let steps: Vec<(Vec<&str>, &str)> = vec![
            (vec!["create", "namespace", &namespace], "created"),
            (vec!["apply", validate, "-f", &client], "sharedvolume.sv.sharedvolume.io/client created"),
            (vec!["apply", validate, "--server-side", "-f", &server], "serverside-applied"),
            (vec!["apply", validate, "-f", &client], "unchanged"),
            (vec!["get", "sv", &ns], "server"),
            (vec!["get", "sv", &ns, "-w", "--request-timeout=2s"], "PHASE"),
            (vec!["describe", "sv", "client", &ns], "Mount Path"),
            (vec!["delete", "-f", &client, "-f", &server], "deleted"),
        ];
        for (args, expected) in steps {
            let output = served.kubectl_named(&program, &args);
            let shown = text(&output);
            if !output.status.success() || !shown.contains(expected) {
                failures.push(format!("{program} {args:?}: expected {expected:?}, got:\n{shown}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
