//! The Kubernetes API behaviours the system relies on, exercised with the real `kube::Client`
//! against the simulated API server on loopback. Each case takes only a client: where
//! `SV_ENVTEST_ASSETS` names a folder with `kube-apiserver` and `etcd`, the same case also runs
//! against a real API server, so the two are held to the same expectations.

use crate::common;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

fn sv_api(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sv.sharedvolume.io", "v1alpha1", "SharedVolume"),
        "sharedvolumes",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn volume(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("volume")
}

fn basic_spec() -> Value {
    json!({"mountPath": "/data", "storage": {"capacity": "1Gi"}, "storageClassName": "standard"})
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv(object: &DynamicObject) -> String {
    object.resource_version().expect("resourceVersion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_replace_and_conflicts() {
    common::against_both(create_get_replace_and_conflicts_case).await;
}

async fn create_get_replace_and_conflicts_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);

    let created = api.create(&PostParams::default(), &volume("sv1", basic_spec())).await.expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    // Schema defaults are filled in.
    assert_eq!(created.data["spec"]["storage"]["accessMode"], json!("ReadOnly"), "{:?}", created.data);

    let again = api_error(api.create(&PostParams::default(), &volume("sv1", basic_spec())).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "sharedvolumes.sv.sharedvolume.io \"sv1\" already exists");

    let missing = api_error(api.get("nope").await);
    assert_eq!((missing.code, missing.message.as_str()), (404, "sharedvolumes.sv.sharedvolume.io \"nope\" not found"));

    let mut changed = created.clone();
    changed.data["spec"]["syncInterval"] = json!("5m");
    let replaced = api.replace("sv1", &PostParams::default(), &changed).await.expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_ne!(rv(&replaced), rv(&created));

    let stale = api_error(api.replace("sv1", &PostParams::default(), &changed).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(stale.message.contains("the object has been modified"), "{}", stale.message);

    let labelled = api
        .patch("sv1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .expect("label");
    assert_eq!(labelled.metadata.generation, Some(2), "labels do not bump the generation");
    assert_ne!(rv(&labelled), rv(&replaced));

    let noop = api
        .patch("sv1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .expect("no-op");
    assert_eq!(rv(&noop), rv(&labelled), "a no-op write keeps the resource version");

    let locked = json!({"metadata": {"resourceVersion": "1"}, "spec": {"mountPath": "/x"}});
    let lock = api_error(api.patch("sv1", &PatchParams::default(), &Patch::Merge(locked)).await);
    assert_eq!(lock.code, 409, "a merge patch carrying a stale resourceVersion is an optimistic lock");

    let failed_test = json_patch::Patch(vec![json_patch::PatchOperation::Test(json_patch::TestOperation {
        path: json_patch::jsonptr::PointerBuf::parse("/spec/mountPath").expect("pointer"),
        value: json!("/wrong"),
    })]);
    let test = api_error(api.patch("sv1", &PatchParams::default(), &Patch::<()>::Json(failed_test)).await);
    assert_eq!((test.code, test.reason.as_str()), (422, "Invalid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_subresource_is_written_apart_from_the_rest() {
    common::against_both(the_status_subresource_is_written_apart_from_the_rest_case).await;
}

async fn the_status_subresource_is_written_apart_from_the_rest_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);
    let created = api.create(&PostParams::default(), &volume("sv1", basic_spec())).await.expect("create");

    let status_patch = json!({"spec": {"mountPath": "/ignored"}, "status": {"phase": "Ready"}});
    let after = api.patch_status("sv1", &PatchParams::default(), &Patch::Merge(status_patch)).await.expect("status");
    assert_eq!(after.data["status"]["phase"], json!("Ready"));
    assert_eq!(after.data["spec"]["mountPath"], json!("/data"), "spec is ignored on /status");
    assert_eq!(after.metadata.generation, created.metadata.generation);

    let main_patch = json!({"status": {"phase": "Failed"}});
    let main = api.patch("sv1", &PatchParams::default(), &Patch::Merge(main_patch)).await.expect("main");
    assert_eq!(main.data["status"]["phase"], json!("Ready"), "status is ignored on the main resource");
    assert_eq!(rv(&main), rv(&after), "and dropping it leaves nothing to change");

    let missing =
        api_error(api.patch_status("nope", &PatchParams::default(), &Patch::Merge(json!({"status": {}}))).await);
    assert_eq!(missing.code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_enforced_with_the_field_and_the_reason() {
    common::against_both(schemas_are_enforced_with_the_field_and_the_reason_case).await;
}

async fn schemas_are_enforced_with_the_field_and_the_reason_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);

    let no_mount =
        api_error(api.create(&PostParams::default(), &volume("bad", json!({"storage": {"capacity": "1Gi"}}))).await);
    assert_eq!((no_mount.code, no_mount.reason.as_str()), (422, "Invalid"));
    assert!(no_mount.message.contains("spec.mountPath: Required value"), "{}", no_mount.message);

    let wrong_type = api_error(api.create(&PostParams::default(), &volume("bad", json!({"mountPath": 7}))).await);
    assert!(
        wrong_type.message.contains("spec.mountPath in body must be of type string: \"integer\""),
        "{}",
        wrong_type.message
    );

    let bad_enum = json!({"mountPath": "/d", "storage": {"capacity": "1Gi", "accessMode": "Bogus"}});
    let bad_enum = api_error(api.create(&PostParams::default(), &volume("bad", bad_enum)).await);
    assert!(bad_enum.message.contains("Unsupported value: \"Bogus\""), "{}", bad_enum.message);

    let bad_name = api_error(api.create(&PostParams::default(), &volume("Bad_Name", basic_spec())).await);
    assert!(bad_name.message.contains("a lowercase RFC 1123 subdomain"), "{}", bad_name.message);

    let mut spec = basic_spec();
    spec["bogus"] = json!(1);
    let pruned =
        api.create(&PostParams::default(), &volume("pruned", spec.clone())).await.expect("unknown fields are pruned");
    assert!(pruned.data["spec"].get("bogus").is_none());

    let strict = http::Request::post(
        "/apis/sv.sharedvolume.io/v1alpha1/namespaces/default/sharedvolumes?fieldValidation=Strict",
    )
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&volume("strict", spec)).expect("body"))
    .expect("request");
    let refused = api_error(client.request::<DynamicObject>(strict).await);
    assert_eq!(refused.code, 400);
    assert!(refused.message.contains("unknown field \"spec.bogus\""), "{}", refused.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_tracks_owners_and_reports_conflicts() {
    common::against_both(server_side_apply_tracks_owners_and_reports_conflicts_case).await;
}

async fn server_side_apply_tracks_owners_and_reports_conflicts_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);
    let mut config = serde_json::to_value(volume("ssa", basic_spec())).expect("json");
    config["spec"]["syncInterval"] = json!("5m");

    let created = api.patch("ssa", &PatchParams::apply("a"), &Patch::Apply(&config)).await.expect("apply creates");
    let again = api.patch("ssa", &PatchParams::apply("a"), &Patch::Apply(&config)).await.expect("re-apply");
    assert_eq!(rv(&again), rv(&created), "re-applying the same configuration changes nothing");

    let mut other = config.clone();
    other["spec"]["syncInterval"] = json!("10m");
    let conflict = api_error(api.patch("ssa", &PatchParams::apply("b"), &Patch::Apply(&other)).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(conflict.message, "Apply failed with 1 conflict: conflict with \"a\": .spec.syncInterval");

    let forced = api.patch("ssa", &PatchParams::apply("b").force(), &Patch::Apply(&other)).await.expect("force");
    assert_eq!(forced.data["spec"]["syncInterval"], json!("10m"));
    let owners: Vec<String> = forced.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(owners.contains(&"b".to_string()), "{owners:?}");

    // "a" applies again without syncInterval: it no longer owns it, so the value stays.
    let mut without = config.clone();
    without["spec"].as_object_mut().expect("spec").remove("syncInterval");
    let kept = api.patch("ssa", &PatchParams::apply("a"), &Patch::Apply(&without)).await.expect("apply");
    assert_eq!(kept.data["spec"]["syncInterval"], json!("10m"));

    let no_manager = api_error(
        api.patch("ssa", &PatchParams { field_manager: None, ..PatchParams::default() }, &Patch::Apply(&config)).await,
    );
    assert_eq!(no_manager.code, 422);
    assert!(no_manager.message.contains("fieldManager: Required value"), "{}", no_manager.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_a_deletion_until_they_are_removed() {
    common::against_both(finalizers_hold_a_deletion_until_they_are_removed_case).await;
}

async fn finalizers_hold_a_deletion_until_they_are_removed_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);
    let mut held = volume("held", basic_spec());
    held.metadata.finalizers = Some(vec!["sv.sharedvolume.io/cleanup".into()]);
    api.create(&PostParams::default(), &held).await.expect("create");

    let deleting = api.delete("held", &DeleteParams::default()).await.expect("delete");
    let deleting = deleting.left().expect("the object is returned while finalizers hold it");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.generation, Some(2));

    let add = json!({"metadata": {"finalizers": ["sv.sharedvolume.io/cleanup", "another"]}});
    let refused = api_error(api.patch("held", &PatchParams::default(), &Patch::Merge(add)).await);
    assert_eq!(refused.code, 422);
    assert!(refused.message.contains("no new finalizers can be added"), "{}", refused.message);

    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .expect("remove the finalizer");
    assert_eq!(api_error(api.get("held").await).code, 404);

    api.create(&PostParams::default(), &volume("plain", basic_spec())).await.expect("create");
    let gone = api.delete("plain", &DeleteParams::default()).await.expect("delete");
    let status = gone.right().expect("a Status when the object is gone at once");
    assert_eq!(status.details.expect("details").name, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_every_change_in_order() {
    common::against_both(watches_deliver_every_change_in_order_case).await;
}

async fn watches_deliver_every_change_in_order_case(client: Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.expect("list");
    let from = list.metadata.resource_version.expect("list rv");
    let mut events = api.watch(&WatchParams::default().timeout(5), &from).await.expect("watch").boxed();

    let cm = |name: &str| -> ConfigMap { serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm") };
    api.create(&PostParams::default(), &cm("w1")).await.expect("create w1");
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.expect("patch");
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.expect("no-op");
    api.create(&PostParams::default(), &cm("w2")).await.expect("create w2");
    api.delete("w1", &DeleteParams::default()).await.expect("delete w1");

    let mut seen = Vec::new();
    while seen.len() < 4 {
        match events.try_next().await.expect("event") {
            Some(WatchEvent::Added(o)) => seen.push(format!("ADDED {}", o.name_any())),
            Some(WatchEvent::Modified(o)) => seen.push(format!("MODIFIED {}", o.name_any())),
            Some(WatchEvent::Deleted(o)) => seen.push(format!("DELETED {}", o.name_any())),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w1", "MODIFIED w1", "ADDED w2", "DELETED w1"]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_is_told_to_relist() {
    let sim = common::start_with(sv_sim::api::Options { watch_cache: 3, ..Default::default() }).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let first = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("rv");
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).expect("cm");
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let mut events = api.watch(&WatchParams::default().timeout(5), &first).await.expect("watch").boxed();
    match events.try_next().await.expect("event") {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    assert!(events.try_next().await.expect("end").is_none(), "the stream ends after the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_pages() {
    common::against_both(selectors_and_pages_case).await;
}

async fn selectors_and_pages_case(client: Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("c{i}"), "labels": {"tier": tier}}}))
                .expect("cm");
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    assert_eq!(names(api.list(&ListParams::default().labels("tier=odd")).await.expect("list")), ["c1", "c3", "c5"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier in (even),!missing")).await.expect("list")).len(), 4);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c2")).await.expect("list")), ["c2"]);

    let mut pages = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = api.list(&params).await.expect("page");
        let token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        pages.push(names(page));
        match token {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, vec![vec!["c0", "c1", "c2"], vec!["c3", "c4", "c5"], vec!["c6"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_must_exist_and_discovery_lists_crds() {
    common::against_both(namespaces_must_exist_and_discovery_lists_crds_case).await;
}

async fn namespaces_must_exist_and_discovery_lists_crds_case(client: Client) {
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm");
    let error = api_error(missing.create(&PostParams::default(), &cm).await);
    assert_eq!((error.code, error.message.as_str()), (404, "namespaces \"nowhere\" not found"));
    assert!(missing.list(&ListParams::default()).await.expect("list").items.is_empty());

    sv_operator::testing::install_crds(&client).await;
    let discovery = kube::Discovery::new(client.clone()).run().await.expect("discovery");
    let group = discovery.get("sv.sharedvolume.io").expect("the CRD group is discovered");
    let mut kinds: Vec<String> = group.recommended_resources().into_iter().map(|(ar, _)| ar.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["ClusterSharedVolume", "SharedVolume"]);
    assert!(discovery.get("apps").is_some() && discovery.get("coordination.k8s.io").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_fields_are_held_by_the_crds_validation_rules() {
    common::against_both(immutable_fields_are_held_by_the_crds_validation_rules_case).await;
}

/// With no webhook installed, the CRDs' `x-kubernetes-validations` still refuse a change of an
/// immutable field, with the field and the message; the fields that may change do.
async fn immutable_fields_are_held_by_the_crds_validation_rules_case(client: Client) {
    sv_operator::testing::install_crds(&client).await;
    let api = sv_api(&client);
    api.create(&PostParams::default(), &volume("fixed", basic_spec())).await.expect("create");
    let patch = |spec: Value| json!({"spec": spec});
    let moved = api_error(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(patch(json!({"mountPath": "/elsewhere"})))).await,
    );
    assert_eq!((moved.code, moved.reason.as_str()), (422, "Invalid"));
    assert!(
        moved.message.contains("spec.mountPath: Invalid value: \"object\": field is immutable"),
        "{}",
        moved.message
    );
    let resized = api_error(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(patch(json!({"storage": {"capacity": "2Gi"}}))))
            .await,
    );
    assert!(resized.message.contains("spec.storage: Invalid value"), "{}", resized.message);
    // referenceValue may be set once, then not changed.
    api.patch("fixed", &PatchParams::default(), &Patch::Merge(patch(json!({"referenceValue": "sv-000000000001"}))))
        .await
        .expect("set once");
    let renamed = api_error(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(patch(json!({"referenceValue": "sv-000000000002"}))))
            .await,
    );
    assert!(renamed.message.contains("spec.referenceValue: Invalid value"), "{}", renamed.message);
    let source = json!({"source": {"http": {"url": "https://example.com/a.tgz"}}, "syncInterval": "5m"});
    api.patch("fixed", &PatchParams::default(), &Patch::Merge(patch(source)))
        .await
        .expect("source and schedule may change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_defaulted_as_a_create_is() {
    common::against_both(an_update_is_defaulted_as_a_create_is_case).await;
}

/// An update is decoded, so defaulted, like a create: a Secret replaced without its type is an
/// Opaque one, which may not replace a TLS Secret; a ConfigMap's replace keeps what it sends.
async fn an_update_is_defaulted_as_a_create_is_case(client: Client) {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "typed"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"},
    }))
    .expect("secret");
    let stored = secrets.create(&PostParams::default(), &tls).await.expect("create");
    let mut untyped = stored.clone();
    untyped.type_ = None;
    let refused = api_error(secrets.replace("typed", &PostParams::default(), &untyped).await);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(refused.message.contains("type: Invalid value: \"Opaque\": field is immutable"), "{}", refused.message);

    let plain: Secret =
        serde_json::from_value(json!({"metadata": {"name": "plain"}, "data": {"k": "dg=="}})).expect("secret");
    let stored = secrets.create(&PostParams::default(), &plain).await.expect("create");
    assert_eq!(stored.type_.as_deref(), Some("Opaque"), "a create is defaulted");
    let mut again = stored.clone();
    again.type_ = None;
    let replaced =
        secrets.replace("plain", &PostParams::default(), &again).await.expect("an Opaque secret stays Opaque");
    assert_eq!(replaced.type_.as_deref(), Some("Opaque"), "a replace is defaulted");
}
