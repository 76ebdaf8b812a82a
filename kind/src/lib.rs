//! `sv-kind`: SharedVolume end to end on real kind clusters, one per Kubernetes version, driven
//! through `kind`, `docker` and `kubectl` as a user would run them.
//!
//! A run is a [`Plan`]: the images built once, then per version a cluster created from a node
//! image pinned by digest, an NFS client installed into its nodes (kind's node image has no
//! `mount.nfs`), the images loaded, the install applied with kustomize (`kind/overlay`, which is
//! `deploy/` with the e2e tags), and the scenario of `kind/manifests`: an HTTP and a git source
//! served inside the cluster, two volumes, readers in two namespaces, the NFS server pods deleted
//! while the readers read, a change of each source reaching the readers, and everything deleted
//! with nothing left behind. Every wait is bounded; a failed step collects logs and events
//! before the cluster is deleted.
//!
//! `sv-kind plan` prints the exact commands; where `kind` or a Docker engine is missing,
//! `sv-kind run` says so and skips.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The kind release whose node images are pinned below (from its release notes).
pub const KIND_VERSION: &str = "v0.33.0";
/// The three newest Kubernetes minors that kind release publishes node images for, newest first.
pub const NODE_IMAGES: [(&str, &str); 3] = [
    ("1.37", "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5"),
    ("1.36", "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed"),
    ("1.35", "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0"),
];
/// Our programs, one image each (see the Dockerfile).
pub const PROGRAMS: [&str; 4] = ["sv-operator", "sv-nfs", "sv-syncer", "sv-webhook"];
pub const REGISTRY: &str = "ghcr.io/sharedvolume";
/// The tag of the images a run builds; `kind/overlay` installs them.
pub const TAG: &str = "e2e";
/// The namespace of the install (and of the cluster volumes' servers and syncers).
pub const NAMESPACE: &str = "shared-volume-controller-system";
/// The nodes of `kind/manifests/cluster.yaml`, after the cluster's name.
const NODE_SUFFIXES: [&str; 3] = ["control-plane", "worker", "worker2"];
/// The label of everything the operator creates.
const MANAGED: &str = "app.kubernetes.io/managed-by=sharedvolume-operator";

/// One command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    fn new(program: &str, args: &[&str]) -> Self {
        Self { program: program.to_string(), args: args.iter().map(|a| a.to_string()).collect() }
    }
}

impl fmt::Display for Cmd {
    /// As a shell line, quoted where needed, so that `plan` can be pasted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |word: &str| {
            let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
            if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
        };
        write!(f, "{}", quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// What a step's output must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The command succeeds.
    Success,
    /// It succeeds and prints this.
    Prints(String),
    /// It succeeds and prints nothing (no object left).
    PrintsNothing,
    /// It succeeds and does not print this.
    Lacks(String),
}

/// One step of a run.
#[derive(Clone, Debug)]
pub struct Step {
    pub what: String,
    pub command: Cmd,
    pub expect: Expect,
    /// Run again every few seconds until the expectation holds, for at most this long (for what
    /// no `kubectl wait` can wait on: a file's content, objects gone).
    pub retry_for: Option<Duration>,
}

impl Step {
    fn run(what: &str, command: Cmd) -> Self {
        Self { what: what.to_string(), command, expect: Expect::Success, retry_for: None }
    }
    fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
    fn retry_for(mut self, limit: Duration) -> Self {
        self.retry_for = Some(limit);
        self
    }
}

/// One cluster's part of a run.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub version: String,
    pub name: String,
    pub steps: Vec<Step>,
    /// Run when a step fails, each into its own file of the logs folder.
    pub diagnostics: Vec<(String, Cmd)>,
    pub teardown: Cmd,
    /// Where its diagnostics go.
    pub logs: PathBuf,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Steps before any cluster: the images.
    pub build: Vec<Step>,
    pub clusters: Vec<ClusterPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("Kubernetes {0} has no pinned kind node image; choose among {1}")]
    UnknownVersion(String, String),
}

/// The image of `program` a run builds.
pub fn image(program: &str) -> String {
    format!("{REGISTRY}/{program}:{TAG}")
}

/// The plan for `versions` (minors such as `1.36`; all of [`NODE_IMAGES`] when empty); a failed
/// cluster's diagnostics go to `logs/<cluster>/`.
pub fn plan(versions: &[String], logs: &Path) -> Result<Plan, PlanError> {
    let chosen: Vec<(&str, &str)> = if versions.is_empty() {
        NODE_IMAGES.to_vec()
    } else {
        versions
            .iter()
            .map(|v| {
                NODE_IMAGES.iter().find(|(minor, _)| minor == v).copied().ok_or_else(|| {
                    let known: Vec<&str> = NODE_IMAGES.iter().map(|(m, _)| *m).collect();
                    PlanError::UnknownVersion(v.clone(), known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let build = PROGRAMS
        .iter()
        .map(|p| {
            Step::run(
                &format!("build the {p} image"),
                Cmd::new("docker", &["build", "--target", p, "-t", &image(p), "."]),
            )
        })
        .collect();
    let clusters = chosen.into_iter().map(|(minor, node_image)| cluster_plan(minor, node_image, logs)).collect();
    Ok(Plan { build, clusters })
}

fn cluster_plan(minor: &str, node_image: &str, logs: &Path) -> ClusterPlan {
    let name = format!("sv-e2e-{}", minor.replace('.', "-"));
    let context = format!("--context=kind-{name}");
    let kubectl = |args: &[&str]| {
        let mut all = vec![context.as_str()];
        all.extend_from_slice(args);
        Cmd::new("kubectl", &all)
    };
    let ns = format!("--namespace={NAMESPACE}");
    let mut steps = vec![Step::run(
        "create the cluster",
        Cmd::new(
            "kind",
            &[
                "create",
                "cluster",
                "--name",
                &name,
                "--image",
                node_image,
                "--config",
                "kind/manifests/cluster.yaml",
                "--wait",
                "180s",
            ],
        ),
    )];
    for suffix in NODE_SUFFIXES {
        let node = format!("{name}-{suffix}");
        steps.push(Step::run(
            &format!("install an NFS client (mount.nfs) on node {node}"),
            Cmd::new(
                "docker",
                &[
                    "exec",
                    &node,
                    "sh",
                    "-ec",
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nfs-common",
                ],
            ),
        ));
    }
    for program in PROGRAMS {
        steps.push(Step::run(
            &format!("load the {program} image into the nodes"),
            Cmd::new("kind", &["load", "docker-image", &image(program), "--name", &name]),
        ));
    }
    steps.extend([
        Step::run("install SharedVolume with kustomize", kubectl(&["apply", "-k", "kind/overlay"])),
        Step::run(
            "the operator and the webhook become available",
            kubectl(&[&ns, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s"]),
        ),
        Step::run(
            "serve an HTTP and a git source in the cluster",
            kubectl(&["apply", "-f", "kind/manifests/sources.yaml"]),
        ),
        Step::run(
            "the sources become available",
            kubectl(&[
                "--namespace=sv-e2e-sources",
                "wait",
                "--for=condition=Available",
                "deployment",
                "--all",
                "--timeout=180s",
            ]),
        ),
        Step::run("create a volume per source", kubectl(&["apply", "-f", "kind/manifests/volumes.yaml"])),
        Step::run(
            "both volumes become Ready",
            kubectl(&["wait", "--for=jsonpath={.status.phase}=Ready", "csv/e2e-http", "csv/e2e-git", "--timeout=300s"]),
        ),
        Step::run("start readers in two namespaces", kubectl(&["apply", "-f", "kind/manifests/readers.yaml"])),
    ]);
    for reader_ns in ["sv-e2e-a", "sv-e2e-b"] {
        steps.push(Step::run(
            &format!("the reader in {reader_ns} gets both volumes and runs"),
            kubectl(&[
                &format!("--namespace={reader_ns}"),
                "wait",
                "--for=condition=Ready",
                "pod/reader",
                "--timeout=180s",
            ]),
        ));
    }
    let read = |reader_ns: &str, path: &str| {
        kubectl(&[&format!("--namespace={reader_ns}"), "exec", "reader", "--", "cat", path])
    };
    let nfs_servers = "--selector=app.kubernetes.io/component=nfs-server";
    steps.extend([
        Step::run("the reader in sv-e2e-a reads the HTTP file", read("sv-e2e-a", "/data/http/hello.txt"))
            .expect(Expect::Prints("revision 1".into())),
        Step::run("the reader in sv-e2e-b reads the git file", read("sv-e2e-b", "/data/git/README.md"))
            .expect(Expect::Prints("revision 1".into())),
        Step::run("delete the NFS server pods while the readers read", kubectl(&[&ns, "delete", "pod", nfs_servers, "--wait=true"])),
        Step::run(
            "the NFS servers come back",
            kubectl(&[&ns, "wait", "--for=condition=Ready", "pod", nfs_servers, "--timeout=180s"]),
        )
        // Until the StatefulSets have made the new pods, there is nothing to wait on.
        .retry_for(Duration::from_secs(60)),
        Step::run("the reader in sv-e2e-a reads again through the same mount", read("sv-e2e-a", "/data/http/hello.txt"))
            .expect(Expect::Prints("revision 1".into()))
            .retry_for(Duration::from_secs(180)),
        Step::run(
            "the reader was never restarted",
            kubectl(&["--namespace=sv-e2e-a", "get", "pod", "reader", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]),
        )
        .expect(Expect::Prints("0".into())),
        Step::run(
            "change the HTTP source",
            kubectl(&["--namespace=sv-e2e-sources", "patch", "configmap", "site", "--type=merge", "-p", r#"{"data":{"hello.txt":"revision 2\n"}}"#]),
        ),
        Step::run(
            "change the git source",
            kubectl(&[
                "--namespace=sv-e2e-sources",
                "exec",
                "deploy/git",
                "--",
                "sh",
                "-ec",
                "cd /srv/work && echo 'revision 2' > README.md && git -c user.name=e2e -c user.email=e2e@example.com commit -qam 'revision 2' && git push -q /srv/git/repo.git main",
            ]),
        ),
        // The kubelet refreshes a ConfigMap volume within about a minute; then one sync interval.
        Step::run("the change of the HTTP file reaches the reader in sv-e2e-b", read("sv-e2e-b", "/data/http/hello.txt"))
            .expect(Expect::Prints("revision 2".into()))
            .retry_for(Duration::from_secs(240)),
        Step::run("the change of the git file reaches the reader in sv-e2e-a", read("sv-e2e-a", "/data/git/README.md"))
            .expect(Expect::Prints("revision 2".into()))
            .retry_for(Duration::from_secs(120)),
        Step::run("delete the readers", kubectl(&["delete", "-f", "kind/manifests/readers.yaml", "--wait=true", "--timeout=180s"])),
        Step::run("delete the volumes", kubectl(&["delete", "-f", "kind/manifests/volumes.yaml", "--wait=true", "--timeout=300s"])),
        Step::run(
            "nothing the operator made is left",
            kubectl(&[
                "get",
                "persistentvolumes,persistentvolumeclaims,statefulsets,replicasets,pods,services,secrets,serviceaccounts,roles,rolebindings,leases,networkpolicies",
                "--all-namespaces",
                &format!("--selector={MANAGED}"),
                "-o",
                "name",
            ]),
        )
        .expect(Expect::PrintsNothing)
        .retry_for(Duration::from_secs(120)),
        Step::run("uninstall", kubectl(&["delete", "-k", "kind/overlay", "--wait=true", "--timeout=300s"])),
        Step::run("the CRDs are gone", kubectl(&["get", "customresourcedefinitions", "-o", "name"]))
            .expect(Expect::Lacks("sv.sharedvolume.io".into())),
    ]);
    let diagnostics = vec![
        (
            "objects.txt".to_string(),
            kubectl(&[
                "get",
                "all,persistentvolumes,persistentvolumeclaims,sharedvolumes,clustersharedvolumes",
                "--all-namespaces",
                "-o",
                "wide",
            ]),
        ),
        (
            "volumes.yaml".to_string(),
            kubectl(&["get", "sharedvolumes,clustersharedvolumes", "--all-namespaces", "-o", "yaml"]),
        ),
        ("events.txt".to_string(), kubectl(&["get", "events", "--all-namespaces", "--sort-by=.lastTimestamp"])),
        (
            "sharedvolume-logs.txt".to_string(),
            kubectl(&[
                &ns,
                "logs",
                "--selector=app.kubernetes.io/part-of=sharedvolume",
                "--all-containers",
                "--prefix",
                "--tail=-1",
                "--max-log-requests=20",
            ]),
        ),
        (
            "kind-export.txt".to_string(),
            Cmd::new("kind", &["export", "logs", &logs.join(&name).join("nodes").to_string_lossy(), "--name", &name]),
        ),
    ];
    let teardown = Cmd::new("kind", &["delete", "cluster", "--name", &name]);
    let logs = logs.join(&name);
    ClusterPlan { version: minor.to_string(), name, steps, diagnostics, teardown, logs }
}

impl fmt::Display for Plan {
    /// The commands in order, as a shell script a person can read and run by hand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# sv-kind: kind {KIND_VERSION}; run from the repository's root")?;
        for step in &self.build {
            write_step(f, step)?;
        }
        for cluster in &self.clusters {
            writeln!(f, "\n# Kubernetes {} on cluster {}", cluster.version, cluster.name)?;
            for step in &cluster.steps {
                write_step(f, step)?;
            }
            writeln!(f, "# on a failure, into {}/:", cluster.logs.display())?;
            for (file, command) in &cluster.diagnostics {
                writeln!(f, "#   {command} > {file}")?;
            }
            writeln!(f, "{}", cluster.teardown)?;
        }
        Ok(())
    }
}

fn write_step(f: &mut fmt::Formatter<'_>, step: &Step) -> fmt::Result {
    let expect = match &step.expect {
        Expect::Success => String::new(),
        Expect::Prints(text) => format!("; prints {text:?}"),
        Expect::PrintsNothing => "; prints nothing".to_string(),
        Expect::Lacks(text) => format!("; does not print {text:?}"),
    };
    let retry = step.retry_for.map(|d| format!("; retried for up to {} s", d.as_secs())).unwrap_or_default();
    writeln!(f, "# {}{expect}{retry}\n{}", step.what, step.command)
}

/// Why a run cannot happen on this machine: the tools missing from PATH, or a Docker engine that
/// does not answer. Empty when it can.
pub fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let tools: [(&str, &[&str]); 3] =
        [("kind", &["version"]), ("docker", &["--version"]), ("kubectl", &["version", "--client"])];
    for (tool, args) in tools {
        let found = std::process::Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if found.is_err() {
            missing.push(format!("{tool} is not installed"));
        }
    }
    if !missing.iter().any(|m| m.starts_with("docker")) {
        let engine =
            std::process::Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !engine.is_ok_and(|s| s.success()) {
            missing.push("docker cannot reach a Docker engine (`docker info` fails)".to_string());
        }
    }
    missing
}

/// How one cluster's run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub version: String,
    /// The step that failed, and why; None when every step passed.
    pub failed: Option<String>,
    pub took: Duration,
}

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The repository's root (commands run there).
    pub root: PathBuf,
    /// Keep a cluster whose run failed, to look at it.
    pub keep_failed: bool,
    /// Longest a single command may run.
    pub command_limit: Duration,
}

/// Carries out `plan`, reporting each step to `out`. A failed build stops everything; a failed
/// cluster is reported, its diagnostics collected, and the next version runs.
pub fn run(plan: &Plan, options: &RunOptions, out: &mut dyn Write) -> std::io::Result<Vec<Outcome>> {
    for step in &plan.build {
        if let Err(why) = carry_out(step, options, out)? {
            writeln!(out, "FAILED: {}: {why}", step.what)?;
            return Ok(plan
                .clusters
                .iter()
                .map(|c| Outcome {
                    version: c.version.clone(),
                    failed: Some(format!("building the images: {why}")),
                    took: Duration::ZERO,
                })
                .collect());
        }
    }
    let mut outcomes = Vec::new();
    for cluster in &plan.clusters {
        let started = Instant::now();
        writeln!(out, "== Kubernetes {} (cluster {})", cluster.version, cluster.name)?;
        let mut failed = None;
        for step in &cluster.steps {
            if let Err(why) = carry_out(step, options, out)? {
                failed = Some(format!("{}: {why}", step.what));
                break;
            }
        }
        if let Some(why) = &failed {
            writeln!(out, "FAILED on Kubernetes {}: {why}", cluster.version)?;
            let folder = &cluster.logs;
            std::fs::create_dir_all(folder)?;
            for (file, command) in &cluster.diagnostics {
                let output = execute(command, options)?;
                std::fs::write(folder.join(file), output.text())?;
            }
            writeln!(out, "diagnostics in {}", folder.display())?;
        }
        if failed.is_some() && options.keep_failed {
            writeln!(out, "kept the cluster; delete it with: {}", cluster.teardown)?;
        } else {
            let output = execute(&cluster.teardown, options)?;
            if !output.success {
                writeln!(out, "could not delete the cluster: {}", output.text().trim())?;
            }
        }
        outcomes.push(Outcome { version: cluster.version.clone(), failed, took: started.elapsed() });
    }
    Ok(outcomes)
}

/// A command's result.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a step until its expectation holds (or once, when it is not retried); the error says
/// what was seen instead.
fn carry_out(step: &Step, options: &RunOptions, out: &mut dyn Write) -> std::io::Result<Result<(), String>> {
    let started = Instant::now();
    writeln!(out, "-- {}\n   $ {}", step.what, step.command)?;
    loop {
        let output = execute(&step.command, options)?;
        let verdict = judge(&step.expect, &output);
        let within = step.retry_for.is_some_and(|limit| started.elapsed() < limit);
        match verdict {
            Ok(()) => {
                writeln!(out, "   ok ({:.1} s)", started.elapsed().as_secs_f64())?;
                return Ok(Ok(()));
            }
            // Polling a real cluster for what no watch reports (a file's content over NFS).
            Err(_) if within => std::thread::sleep(Duration::from_secs(5)),
            Err(why) => return Ok(Err(why)),
        }
    }
}

fn judge(expect: &Expect, output: &Output) -> Result<(), String> {
    let shown = || {
        let text = output.text();
        let text = text.trim();
        match text.char_indices().nth(2000) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        }
    };
    if !output.success {
        return Err(format!("the command failed: {}", shown()));
    }
    match expect {
        Expect::Success => Ok(()),
        Expect::Prints(text) if output.stdout.contains(text.as_str()) => Ok(()),
        Expect::Prints(text) => Err(format!("expected {text:?}, got: {}", shown())),
        Expect::PrintsNothing if output.stdout.trim().is_empty() => Ok(()),
        Expect::PrintsNothing => Err(format!("expected nothing, got: {}", shown())),
        Expect::Lacks(text) if !output.stdout.contains(text.as_str()) => Ok(()),
        Expect::Lacks(text) => Err(format!("{text:?} is still there: {}", shown())),
    }
}

/// Runs a command in the repository's root, killed (with its process group) if it runs past the
/// command limit.
fn execute(command: &Cmd, options: &RunOptions) -> std::io::Result<Output> {
    use std::os::unix::process::CommandExt as _;
    let mut child = std::process::Command::new(&command.program)
        .args(&command.args)
        // Its own process group, so that a command past its limit is killed with everything it
        // started (a `sh -c` leaves its children holding the output pipes otherwise).
        .process_group(0)
        .current_dir(&options.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = read(stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = read(stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let deadline = Instant::now() + options.command_limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout.join().unwrap_or_default();
    let mut stderr = stderr.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\nkilled after {} s", options.command_limit.as_secs()));
    }
    Ok(Output { success: status.is_some_and(|s| s.success()), stdout, stderr })
}

/// The repository's root, from where this crate was built (the binary is run from a checkout).
pub fn repository_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
