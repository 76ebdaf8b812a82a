//! What `sv-kind` would do, checked here where no kind cluster can run: the plan's commands, its
//! order, the pinned node images, the manifests it applies, and a clean skip without the tools.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sv_kind::{Expect, NODE_IMAGES, PROGRAMS, Step, image, plan};

fn root() -> &'static Path {
    sv_kind::repository_root()
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.command.to_string()).collect()
}

/// Index of the first step whose command contains `text`.
fn position(steps: &[Step], text: &str) -> usize {
    steps.iter().position(|s| s.command.to_string().contains(text)).unwrap_or_else(|| panic!("no step runs {text:?}"))
}

#[test]
fn the_plan_covers_three_pinned_versions_with_the_whole_scenario_in_order() {
    let plan = plan(&[], Path::new("target/kind-logs")).expect("plan");
    assert_eq!(plan.clusters.len(), 3, "the three newest minors");
    let minors: Vec<&str> = plan.clusters.iter().map(|c| c.version.as_str()).collect();
    assert_eq!(minors, NODE_IMAGES.map(|(m, _)| m));
    for (_, node_image) in NODE_IMAGES {
        let (_, digest) = node_image.split_once("@sha256:").expect("pinned by digest");
        assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{node_image}");
    }

    let build = lines(&plan.build);
    for program in PROGRAMS {
        assert!(build.contains(&format!("docker build --target {program} -t {} .", image(program))), "{build:#?}");
    }
    for (cluster, (_, node_image)) in plan.clusters.iter().zip(NODE_IMAGES) {
        let steps = &cluster.steps;
        let commands = lines(steps);
        let context = format!("--context=kind-{}", cluster.name);
        let create = &commands[0];
        assert!(
            create.starts_with(&format!("kind create cluster --name {} --image {node_image}", cluster.name)),
            "{create}"
        );
        // Every kubectl call names the cluster's context, so that runs never touch another cluster.
        for command in commands.iter().filter(|c| c.starts_with("kubectl")) {
            assert!(command.starts_with(&format!("kubectl {context} ")), "{command}");
        }
        for node in ["control-plane", "worker", "worker2"] {
            assert!(
                commands.iter().any(
                    |c| c.starts_with(&format!("docker exec {}-{node} ", cluster.name)) && c.contains("nfs-common")
                ),
                "no NFS client on {node}"
            );
        }
        for program in PROGRAMS {
            assert!(commands.contains(&format!("kind load docker-image {} --name {}", image(program), cluster.name)));
        }
        let order = [
            "nfs-common",
            "kind load docker-image",
            "apply -k kind/overlay",
            "deployment --all",
            "apply -f kind/manifests/sources.yaml",
            "apply -f kind/manifests/volumes.yaml",
            "csv/e2e-http csv/e2e-git",
            "apply -f kind/manifests/readers.yaml",
            "exec reader -- cat /data/http/hello.txt",
            "delete pod --selector=app.kubernetes.io/component=nfs-server",
            "patch configmap site",
            "git push",
            "delete -f kind/manifests/readers.yaml",
            "delete -f kind/manifests/volumes.yaml",
            "--selector=app.kubernetes.io/managed-by=sharedvolume-operator",
            "delete -k kind/overlay",
            "get customresourcedefinitions",
        ];
        let positions: Vec<usize> = order.iter().map(|text| position(steps, text)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "out of order: {:?}",
            order.iter().zip(&positions).collect::<Vec<_>>()
        );
        // After the NFS servers are deleted, the reader reads again without having restarted.
        let deleted = position(steps, "delete pod --selector=app.kubernetes.io/component=nfs-server");
        let after = &steps[deleted..];
        assert!(
            after
                .iter()
                .any(|s| s.command.to_string().contains("restartCount") && s.expect == Expect::Prints("0".into()))
        );
        let leftovers = &steps[position(steps, "--selector=app.kubernetes.io/managed-by=sharedvolume-operator")];
        assert_eq!(leftovers.expect, Expect::PrintsNothing);
        assert!(leftovers.retry_for.is_some(), "deletion takes a while: the check must be retried");
        assert_eq!(cluster.teardown.to_string(), format!("kind delete cluster --name {}", cluster.name));
        let diagnostics: Vec<String> = cluster.diagnostics.iter().map(|(_, c)| c.to_string()).collect();
        for wanted in ["get events", "logs --selector=app.kubernetes.io/part-of=sharedvolume", "kind export logs"] {
            assert!(diagnostics.iter().any(|d| d.contains(wanted)), "{wanted} missing from {diagnostics:#?}");
        }
    }
}

#[test]
fn an_unknown_version_names_the_ones_there_are() {
    let error = plan(&["1.20".to_string()], Path::new("logs")).expect_err("no node image for 1.20").to_string();
    assert!(error.contains("1.20") && error.contains("1.37, 1.36, 1.35"), "{error}");
}

#[test]
fn the_printed_plan_is_the_commands_and_runs_from_the_repository_root() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_sv-kind")).args(["plan", "--versions", "1.35"]).output().expect("run");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let plan = plan(&["1.35".to_string()], Path::new("target/kind-logs")).expect("plan");
    for step in plan.build.iter().chain(&plan.clusters[0].steps) {
        assert!(text.contains(&format!("# {}", step.what)), "{} is not described", step.what);
        assert!(text.contains(&step.command.to_string()), "{} is not printed", step.command);
    }
    // Paths in the plan are the repository's.
    for path in ["Dockerfile", "kind/overlay/kustomization.yaml", "kind/manifests/cluster.yaml"] {
        assert!(root().join(path).exists(), "{path}");
    }
    for step in &plan.clusters[0].steps {
        for arg in &step.command.args {
            if arg.starts_with("kind/") {
                assert!(root().join(arg).exists(), "the plan names {arg}, which does not exist");
            }
        }
    }
}

#[test]
fn without_kind_or_docker_a_run_skips_and_says_why() {
    let empty = tempfile_dir();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sv-kind")).arg("run").args(extra).env("PATH", &empty).output().expect("run")
    };
    let skipped = run(&[]);
    let text = String::from_utf8_lossy(&skipped.stdout).into_owned();
    assert!(skipped.status.success(), "a skip is not a failure: {text}");
    assert!(
        text.contains("skipped") && text.contains("kind is not installed") && text.contains("docker is not installed"),
        "{text}"
    );
    let required = run(&["--require-tools"]);
    assert!(!required.status.success(), "CI asks for the tools: a missing one must fail there");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sv-kind-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// The volumes of the scenario pass the operator's own validation, and the readers ask for them
/// by name at the paths the plan reads.
#[test]
fn the_scenario_manifests_fit_together() {
    let read = |file: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(root().join("kind/manifests").join(file)).expect("manifest");
        serde_saphyr::from_multiple::<Value>(&text).expect("YAML").into_iter().filter(|d| !d.is_null()).collect()
    };
    let volumes = read("volumes.yaml");
    let mut names = Vec::new();
    for volume in &volumes {
        let parsed: sv_api::ClusterSharedVolume =
            serde_json::from_value(volume.clone()).expect("a ClusterSharedVolume");
        let problems = sv_api::validation::validate_volume(sv_api::validation::VolumeInput::of(&parsed), None);
        assert!(problems.errors.is_empty(), "{}: {:?}", volume["metadata"]["name"], problems.errors);
        names.push((
            volume["metadata"]["name"].as_str().expect("name").to_string(),
            volume["spec"]["mountPath"].clone(),
        ));
    }
    assert_eq!(
        names.iter().map(|(_, p)| p.as_str().unwrap_or_default()).collect::<Vec<_>>(),
        ["/data/http", "/data/git"]
    );
    let readers: Vec<Value> = read("readers.yaml").into_iter().filter(|d| d["kind"] == "Pod").collect();
    assert_eq!(readers.len(), 2);
    for reader in readers {
        let asked = reader["metadata"]["annotations"]["sharedvolume.csv"].as_str().expect("annotation");
        let asked: Vec<&str> = asked.split(',').map(str::trim).collect();
        assert_eq!(asked, names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
    }
    let sources = read("sources.yaml");
    let site = sources.iter().find(|d| d["kind"] == "ConfigMap").expect("the HTTP source's file");
    assert_eq!(site["data"]["hello.txt"], "revision 1\n");
}

/// The GitHub workflow runs the tests, then `sv-kind run` for exactly the pinned versions, and
/// keeps the logs of a failure.
#[test]
fn the_ci_workflow_runs_every_pinned_version() {
    let workflow = std::fs::read_to_string(root().join(".github/workflows/ci.yml")).expect("the workflow");
    let minors: Vec<String> = NODE_IMAGES.iter().map(|(m, _)| format!("\"{m}\"")).collect();
    assert!(workflow.contains(&format!("kubernetes: [{}]", minors.join(", "))), "the matrix must name {minors:?}");
    assert!(
        workflow.contains(&format!("sigs.k8s.io/kind@{}", sv_kind::KIND_VERSION)),
        "kind {}",
        sv_kind::KIND_VERSION
    );
    assert!(workflow.contains("bash .ci/run"), "the tests as .ci/run runs them");
    assert!(workflow.contains("sv-kind -- run --require-tools --versions ${{ matrix.kubernetes }}"));
    assert!(workflow.contains("path: target/kind-logs/"));
}
