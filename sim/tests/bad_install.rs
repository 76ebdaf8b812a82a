//! An install gone wrong says what is wrong, where a user looks first: a misspelt image shows as
//! `ImagePullBackOff` on the pod and on the volume's condition; a webhook with no ready pods makes
//! the API server refuse annotated pods with the real "no endpoints available" error while other
//! pods are admitted; an operator started before its CRDs stays unready until they exist.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sv_sim::api::ApiServer;
use sv_sim::examples::{self, EXTERNAL_NFS};
use sv_sim::install::{documents, stored};
use sv_sim::world::{World, WorldConfig};

const OPERATOR_MANIFEST: &str = include_str!("../../deploy/base/operator.yaml");
const WEBHOOK_MANIFEST: &str = include_str!("../../deploy/base/webhook.yaml");
const NAMESPACE: &str = "shared-volume-controller-system";

fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

/// The pods of `namespace` whose name starts with `prefix`.
fn pods(api: &ApiServer, namespace: &str, prefix: &str) -> Vec<Value> {
    let state = api.state();
    let Some(rt) = state.registry.find("", "v1", "pods") else { return Vec::new() };
    state
        .store
        .list(&rt.id, Some(namespace))
        .filter(|((_, name), _)| name.starts_with(prefix))
        .map(|(_, pod)| (**pod).clone())
        .collect()
}

/// The waiting reasons of the containers of those pods.
fn waiting(api: &ApiServer, namespace: &str, prefix: &str) -> Vec<String> {
    pods(api, namespace, prefix)
        .iter()
        .flat_map(|pod| pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string))
        .collect()
}

/// Whether each of those pods is Ready.
fn readiness(api: &ApiServer, namespace: &str, prefix: &str) -> Vec<bool> {
    pods(api, namespace, prefix)
        .iter()
        .map(|pod| condition(pod, "Ready").is_some_and(|c| c["status"] == "True"))
        .collect()
}

#[test]
fn a_misspelt_nfs_server_image_shows_on_its_pod_and_on_the_volume() {
    sv_sim::init_test_logging();
    let config = WorldConfig { external_nfs: EXTERNAL_NFS.map(String::from).to_vec(), ..WorldConfig::default() };
    let mut world = World::new(config).expect("a world");
    world.set_operator_args(["--nfs-image=ghcr.io/sharedvolume/sv-nsf:0.1.0"]);
    assert!(examples::install(&world).expect("install").is_empty());
    for result in world.create_all(examples::example("13-http.yaml").expect("example")) {
        result.expect("create");
    }
    let named = world.run_until(Duration::from_secs(120), |api| {
        stored(api, "sv.sharedvolume.io", "sharedvolumes", "default", "http-sv")
            .and_then(|v| condition(&v, "NfsServerReady"))
            .is_some_and(|c| c["message"].as_str().is_some_and(|m| m.contains("ImagePullBackOff")))
    });
    let volume = stored(&world.api, "sv.sharedvolume.io", "sharedvolumes", "default", "http-sv").expect("volume");
    assert!(named.expect("run"), "the volume does not say why its server is not ready: {:#}", volume["status"]);
    let message = condition(&volume, "NfsServerReady").expect("condition")["message"].to_string();
    assert!(message.contains("sv-nsf:0.1.0") && message.contains("container nfs"), "{message}");
    assert_eq!(volume["status"]["phase"], "Pending", "{:#}", volume["status"]);
    assert!(waiting(&world.api, "default", "nfs-").contains(&"ImagePullBackOff".to_string()));
}

/// Creates a pod through the API server over the simulated network, as kubectl does; returns the
/// error's text, if any.
fn create_pod(world: &mut World, name: &'static str, annotations: Value) -> Result<(), String> {
    let result: Arc<Mutex<Option<Result<(), String>>>> = Arc::default();
    let record = result.clone();
    world.sim.client(format!("kubectl-{name}"), async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }))?;
        let created = Api::<Pod>::namespaced(client, "default").create(&PostParams::default(), &pod).await;
        *record.lock().map_err(|e| e.to_string())? = Some(created.map(|_| ()).map_err(|e| e.to_string()));
        Ok(())
    });
    let done = result.clone();
    let finished = world.run_until(Duration::from_secs(60), |_| done.lock().map(|r| r.is_some()).unwrap_or(true));
    assert!(finished.expect("run"), "the client did not finish");
    result.lock().expect("lock").take().expect("a result")
}

#[test]
fn a_webhook_without_ready_pods_refuses_annotated_pods_with_the_real_error() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig::default()).expect("a world");
    assert!(examples::install(&world).expect("install").is_empty());
    let misspelt = WEBHOOK_MANIFEST.replace("ghcr.io/sharedvolume/sv-webhook:", "ghcr.io/sharedvolume/sv-webhok:");
    assert_ne!(misspelt, WEBHOOK_MANIFEST, "the manifest names the webhook image");
    for result in world.create_all(documents(&misspelt).expect("the manifest parses")) {
        result.expect("create");
    }
    let backing_off = world.run_until(Duration::from_secs(60), |api| {
        waiting(api, NAMESPACE, "sharedvolume-webhook-").iter().filter(|r| *r == "ImagePullBackOff").count() == 2
    });
    assert!(
        backing_off.expect("run"),
        "the webhook's pods: {:?}",
        waiting(&world.api, NAMESPACE, "sharedvolume-webhook-")
    );

    let refused = create_pod(&mut world, "reader", json!({"sharedvolume.sv": "http-sv"}))
        .expect_err("an annotated pod was admitted without its webhook");
    let expected = "failed to call webhook: Post \"https://sv-webhook.shared-volume-controller-system.svc:443/mutate";
    assert!(
        refused.contains("failed calling webhook \"pods.sv.sharedvolume.io\"") && refused.contains(expected),
        "{refused}"
    );
    assert!(refused.contains("no endpoints available for service \"sv-webhook\""), "{refused}");
    create_pod(&mut world, "plain", json!({})).expect("a pod that asks for no volume does not need the webhook");
}

#[test]
fn an_operator_started_before_its_crds_stays_unready_until_they_exist() {
    sv_sim::init_test_logging();
    let config = WorldConfig { operator: false, ..WorldConfig::default() };
    let mut world = World::new(config).expect("a world");
    world.api.create_object(examples::storage_class(), "kubectl").expect("StorageClass");
    let mut objects = documents(OPERATOR_MANIFEST).expect("the manifest parses");
    objects.retain(|o| o["kind"] != "CustomResourceDefinition");
    for result in world.create_all(objects) {
        result.expect("create");
    }
    let running = world.run_until(Duration::from_secs(60), |api| {
        let operators = pods(api, NAMESPACE, "sharedvolume-operator-");
        operators.len() == 2 && operators.iter().all(|pod| pod["status"]["phase"] == "Running")
    });
    assert!(running.expect("run"), "the operator's pods do not run");
    // Long enough for several readiness probes.
    world.run_for(Duration::from_secs(60)).expect("run");
    let ready = readiness(&world.api, NAMESPACE, "sharedvolume-operator-");
    assert_eq!(ready, [false, false], "an operator without its CRDs must not report ready");

    for crd in sv_operator::api::crds() {
        world.api.create_object(serde_json::to_value(crd).expect("CRD"), "kubectl").expect("create the CRD");
    }
    let became_ready = world
        .run_until(Duration::from_secs(120), |api| readiness(api, NAMESPACE, "sharedvolume-operator-") == [true, true]);
    assert!(became_ready.expect("run"), "the operator did not become ready once its CRDs exist");
}
