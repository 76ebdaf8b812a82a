//! The real `sv-webhook`, installed from `deploy/base/webhook.yaml`, runs as the pods of its image
//! behind its Service: it issues its certificate and publishes the CA in its configurations;
//! consumer pods created through the API server come out mutated with their claims created, the
//! last consumer's deletion removes the namespace's storage, and with the webhook down annotated
//! pods are refused while every other pod is not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use sv_sim::api::ApiServer;
use sv_sim::examples::install;
use sv_sim::world::{World, WorldConfig};

const OPERATOR_NS: &str = "shared-volume-controller-system";

fn get(api: &ApiServer, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let version = match group {
        "" => "v1",
        "sv.sharedvolume.io" => "v1alpha1",
        _ => "v1",
    };
    let state = api.state();
    let rt = state.registry.find(group, version, plural)?;
    state.store.get(&rt.id, namespace, name).map(|o| (**o).clone())
}

fn world() -> World {
    world_with_args(&[])
}

/// The world of these tests; `extra` are added to the webhook container's arguments.
fn world_with_args(extra: &[&str]) -> World {
    sv_sim::init_test_logging();
    let world = World::new(WorldConfig::default()).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    let mut manifests: Vec<Value> = serde_saphyr::from_multiple(include_str!("../../deploy/base/webhook.yaml"))
        .expect("deploy/base/webhook.yaml parses");
    for manifest in manifests.iter_mut().filter(|m| m["kind"] == "Deployment") {
        let args = manifest["spec"]["template"]["spec"]["containers"][0]["args"].as_array_mut().expect("args");
        args.extend(extra.iter().map(|a| json!(a)));
    }
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})];
    objects.extend(manifests);
    objects.push(json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": "data", "namespace": "team-a"},
        "spec": {"mountPath": "/mnt/shared/data", "storageClassName": "standard",
                 "storage": {"capacity": "1Gi", "accessMode": "ReadOnly"}},
    }));
    for result in world.create_all(objects) {
        result.expect("create");
    }
    world
}

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox"}],
                 "initContainers": [{"name": "init", "image": "busybox"}]},
    }))
    .expect("pod")
}

type Results = Arc<Mutex<Vec<(String, Result<Value, String>)>>>;

/// Creates (or deletes, for names starting with `-`) pods in team-a through the API server, as
/// a client outside the cluster would.
fn client_run(world: &mut World, host: &str, steps: Vec<(String, Value)>) -> Vec<(String, Result<Value, String>)> {
    let results: Results = Arc::default();
    let record = results.clone();
    let count = steps.len();
    world.sim.client(host.to_string(), async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        let pods: Api<Pod> = Api::namespaced(client, "team-a");
        for (name, annotations) in steps {
            let result = match name.strip_prefix('-') {
                Some(name) => pods.delete(name, &DeleteParams::default()).await.map(|_| Value::Null),
                None => pods
                    .create(&PostParams::default(), &pod(&name, annotations))
                    .await
                    .map(|p| serde_json::to_value(p).unwrap_or_default()),
            };
            record.lock().expect("lock").push((name, result.map_err(|e| e.to_string())));
        }
        Ok(())
    });
    let done = results.clone();
    assert!(world.run_until(Duration::from_secs(120), |_| done.lock().expect("lock").len() == count).expect("run"));
    results.lock().expect("lock").clone()
}

#[test]
fn consumer_pods_are_mutated_and_their_storage_follows_the_last_consumer() {
    let mut world = world();
    let ready = |api: &ApiServer| {
        sv_sim::install::webhook_serving(api)
            && get(api, "sv.sharedvolume.io", "sharedvolumes", "team-a", "data")
                .is_some_and(|v| v["status"]["phase"] == "Ready")
    };
    assert!(
        world.run_until(Duration::from_secs(600), ready).expect("run"),
        "the webhook serves and the volume is Ready"
    );
    let volume = get(&world.api, "sv.sharedvolume.io", "sharedvolumes", "team-a", "data").expect("volume");
    let reference = volume["spec"]["referenceValue"].as_str().expect("referenceValue").to_string();
    let claim = format!("{reference}-team-a");

    let results = client_run(
        &mut world,
        "tester",
        vec![("consumer".into(), json!({"sharedvolume.sv": "data"})), ("plain".into(), json!({}))],
    );
    let consumer = results[0].1.clone().expect("the annotated pod is admitted");
    let volumes = consumer["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let ours = volumes.iter().find(|v| v["name"] == reference.as_str()).expect("the volume is added");
    assert_eq!(ours["persistentVolumeClaim"]["claimName"], claim.as_str());
    for field in ["containers", "initContainers"] {
        let mounts = consumer["spec"][field][0]["volumeMounts"].to_string();
        assert!(mounts.contains("/mnt/shared/data") && mounts.contains("\"readOnly\":true"), "{field}: {mounts}");
    }
    assert_eq!(consumer["metadata"]["labels"]["sv.sharedvolume.io/consumer"], "true");
    let plain = results[1].1.clone().expect("a plain pod is admitted");
    assert!(plain["metadata"]["labels"].get("sv.sharedvolume.io/consumer").is_none(), "untouched: {plain}");
    assert!(get(&world.api, "", "persistentvolumeclaims", "team-a", &claim).is_some(), "the webhook created the claim");
    assert!(get(&world.api, "", "persistentvolumes", "", &claim).is_some(), "and its PV");

    // Many consumers at once, from separate clients, reach both webhook replicas at once: every pod is
    // admitted (a creation racing another's is not an error).
    let results: Results = Arc::default();
    let clients = 8;
    for i in 0..clients {
        let record = results.clone();
        world.sim.client(format!("burst-{i}"), async move {
            let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
            let pods: Api<Pod> = Api::namespaced(client, "team-a");
            let name = format!("burst-{i}");
            let created = pods.create(&PostParams::default(), &pod(&name, json!({"sharedvolume.sv": "data"}))).await;
            record.lock().expect("lock").push((name, created.map(|_| Value::Null).map_err(|e| e.to_string())));
            Ok(())
        });
    }
    let done = results.clone();
    assert!(world.run_until(Duration::from_secs(120), |_| done.lock().expect("lock").len() == clients).expect("run"));
    let failed: Vec<_> = results.lock().expect("lock").iter().filter(|(_, r)| r.is_err()).cloned().collect();
    assert!(failed.is_empty(), "concurrent consumers refused: {failed:?}");
    assert!(get(&world.api, "", "persistentvolumeclaims", "team-a", &claim).is_some(), "the claim is still there");
    let burst: Vec<(String, Value)> = (0..clients).map(|i| (format!("-burst-{i}"), Value::Null)).collect();
    client_run(&mut world, "burst-deleter", burst);

    // The last consumer goes: the operator removes the namespace's storage.
    client_run(&mut world, "deleter", vec![("-consumer".into(), Value::Null)]);
    let gone = |api: &ApiServer| {
        get(api, "", "persistentvolumeclaims", "team-a", &claim).is_none()
            && get(api, "", "persistentvolumes", "", &claim).is_none()
    };
    assert!(
        world.run_until(Duration::from_secs(300), gone).expect("run"),
        "consumer storage removed after the last consumer"
    );
}

/// What the scenarios and the main job send as the administrator (`World::create`, `apply`,
/// `delete`) enters by the front door: the webhooks mutate and refuse it as they do a client's.
#[test]
fn the_administrators_writes_pass_the_webhooks() {
    let mut world = world();
    let ready = |api: &ApiServer| {
        sv_sim::install::webhook_serving(api)
            && get(api, "sv.sharedvolume.io", "sharedvolumes", "team-a", "data")
                .is_some_and(|v| v["status"]["phase"] == "Ready")
    };
    assert!(world.run_until(Duration::from_secs(600), ready).expect("run"), "the webhook serves");

    let mut consumer = serde_json::to_value(pod("consumer", json!({"sharedvolume.sv": "data"}))).expect("pod");
    consumer["apiVersion"] = json!("v1");
    consumer["kind"] = json!("Pod");
    consumer["metadata"]["namespace"] = json!("team-a");
    world.create(consumer).expect("answered").expect("the consumer is admitted");
    let stored = get(&world.api, "", "pods", "team-a", "consumer").expect("stored");
    assert_eq!(stored["metadata"]["labels"]["sv.sharedvolume.io/consumer"], "true", "mutated: {stored}");

    let invalid = json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": "bad", "namespace": "team-a"},
        "spec": {"mountPath": "relative/dir", "storageClassName": "standard",
                 "storage": {"capacity": "1Gi", "accessMode": "ReadOnly"}},
    });
    let refused = world.create(invalid).expect("answered").expect_err("an invalid volume is refused");
    let message = format!("{refused:?}");
    assert!(message.contains("denied the request") && message.contains("spec.mountPath"), "{message}");
    assert!(get(&world.api, "sv.sharedvolume.io", "sharedvolumes", "team-a", "bad").is_none());

    // An update is reviewed too: a source with credentials in its URL is refused.
    let update = json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": "data", "namespace": "team-a"},
        "spec": {"source": {"http": {"url": "ftp://someone:hunter2@files.example.com/data.tar.gz"}}},
    });
    let refused = world.apply(update).expect("answered").expect_err("the update is refused");
    assert!(format!("{refused:?}").contains("denied the request"), "{refused:?}");
    let volume = get(&world.api, "sv.sharedvolume.io", "sharedvolumes", "team-a", "data").expect("volume");
    assert!(volume["spec"]["source"].is_null(), "the stored volume is unchanged: {volume}");

    let rt = world.api.state().registry.find("", "v1", "pods").cloned().expect("pods");
    world.delete(&rt, "team-a", "consumer").expect("answered").expect("deleted");

    // Applying the manifest again keeps the CA the webhook published: the webhooks merge by name.
    let ca = |api: &ApiServer| {
        get(api, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "sharedvolume-webhook")
            .map(|c| c["webhooks"][0]["clientConfig"]["caBundle"].clone())
    };
    let published = ca(&world.api).expect("the configuration");
    assert!(published.as_str().is_some_and(|b| !b.is_empty()), "{published}");
    let manifests: Vec<Value> =
        serde_saphyr::from_multiple(include_str!("../../deploy/base/webhook.yaml")).expect("parses");
    let mutating =
        manifests.into_iter().find(|m| m["kind"] == "MutatingWebhookConfiguration").expect("in the manifest");
    world.apply(mutating).expect("answered").expect("applied");
    assert_eq!(ca(&world.api), Some(published), "the caBundle stays");
}

#[test]
fn with_the_webhook_down_only_annotated_pods_are_refused() {
    let mut world = world();
    assert!(
        world.run_until(Duration::from_secs(600), sv_sim::install::webhook_ca_published).expect("run"),
        "the webhook serves"
    );
    // Take the webhook away: its Deployment is deleted, the pods go.
    {
        let mut state = world.api.state();
        let rt = state.registry.find("apps", "v1", "deployments").expect("deployments").clone();
        world.api.delete_in(&mut state, &rt, OPERATOR_NS, "sharedvolume-webhook", &Default::default()).expect("delete");
    }
    let no_webhook_pods = |api: &ApiServer| {
        let state = api.state();
        let Some(rt) = state.registry.find("", "v1", "pods") else { return false };
        !state
            .store
            .list(&rt.id, Some(OPERATOR_NS))
            .any(|(_, p)| p["metadata"]["labels"]["app.kubernetes.io/name"] == "sharedvolume-webhook")
    };
    assert!(world.run_until(Duration::from_secs(300), no_webhook_pods).expect("run"));
    let results = client_run(
        &mut world,
        "tester",
        vec![("consumer".into(), json!({"sharedvolume.sv": "data"})), ("plain".into(), json!({"team": "a"}))],
    );
    let refused = results[0].1.clone().expect_err("the annotated pod is refused");
    assert!(refused.contains("pods.sv.sharedvolume.io"), "the message names the webhook: {refused}");
    results[1].1.clone().expect("every other pod is unaffected");
}

#[test]
fn admissions_keep_working_across_certificate_rotations() {
    // Short lifetimes, so that 150 simulated minutes see a leaf renewal every 7 minutes and a CA
    // rotation every 27; the simulated API server checks certificates at simulated time, so an
    // expired or untrusted certificate fails the admission.
    let mut world = world_with_args(&["--ca-lifetime=40m", "--leaf-lifetime=10m", "--ca-overlap=3m"]);
    assert!(
        world.run_until(Duration::from_secs(600), sv_sim::install::webhook_serving).expect("run"),
        "the webhook serves"
    );
    let results: Results = Arc::default();
    let record = results.clone();
    let rounds = 75;
    world.sim.client("tester", async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        let pods: Api<Pod> = Api::namespaced(client, "team-a");
        for round in 0..rounds {
            let name = format!("consumer-{round}");
            let created = pods.create(&PostParams::default(), &pod(&name, json!({"sharedvolume.sv": "data"}))).await;
            if created.is_ok() {
                let _ = pods.delete(&name, &DeleteParams::default()).await;
            }
            record.lock().expect("lock").push((name, created.map(|_| Value::Null).map_err(|e| e.to_string())));
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Ok(())
    });
    let mut bundles = std::collections::BTreeSet::new();
    let done = results.clone();
    let mut checks = 0u64;
    let finished = world
        .run_until(Duration::from_secs(3 * 3600), |api| {
            checks += 1;
            // Every 5 simulated seconds is enough to see each bundle (each lasts minutes).
            if checks.is_multiple_of(50)
                && let Some(config) = get(
                    api,
                    "admissionregistration.k8s.io",
                    "mutatingwebhookconfigurations",
                    "",
                    "sharedvolume-webhook",
                )
            {
                bundles
                    .insert(config["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap_or_default().to_string());
            }
            done.lock().expect("lock").len() == rounds
        })
        .expect("run");
    assert!(finished, "every round ran");
    let failed: Vec<_> = results.lock().expect("lock").iter().filter(|(_, r)| r.is_err()).cloned().collect();
    assert!(failed.is_empty(), "admissions failed during rotation: {failed:?}");
    // One bundle per CA, and one per overlap: at least three CA rotations were seen.
    assert!(bundles.len() >= 7, "caBundle values seen: {}", bundles.len());
    let secret = get(&world.api, "", "secrets", OPERATOR_NS, "sv-webhook-tls").expect("the certificate Secret");
    assert!(secret["data"]["tls.crt"].is_string());
}
