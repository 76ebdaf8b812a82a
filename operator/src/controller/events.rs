//! Publishing Kubernetes Events (events.k8s.io/v1) with the injected clock, so Event names and
//! times replay in the simulation. Repeats of the same Event within ten minutes become a series
//! (one object with a count), as client-go's recorder does.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::clock::SharedClock;
use crate::plan::PlannedEvent;

const SERIES_WINDOW: SignedDuration = SignedDuration::from_secs(600);
/// Upper bound of cached series, so a flood of distinct events cannot grow memory without limit.
const MAX_CACHED: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    regarding_uid: String,
    reason: String,
    note: String,
}

struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: k8s_openapi::jiff::Timestamp,
}

/// Publishes Events on behalf of one controller.
pub struct Recorder {
    client: Client,
    clock: SharedClock,
    controller: String,
    instance: String,
    series: Mutex<HashMap<SeriesKey, Series>>,
}

impl Recorder {
    pub fn new(client: Client, clock: SharedClock, controller: &str, instance: &str) -> Self {
        Self {
            client,
            clock,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes one Event about `regarding`. Events of cluster-scoped objects go to `default`, as the
    /// API server requires.
    pub async fn publish(&self, regarding: &ObjectReference, event: &PlannedEvent) -> Result<(), kube::Error> {
        let now = self.clock.now();
        let key = SeriesKey {
            regarding_uid: regarding.uid.clone().unwrap_or_default(),
            reason: event.reason.clone(),
            note: event.note.clone(),
        };
        let repeat = {
            let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, s| s.last + SERIES_WINDOW > now);
            match cache.get_mut(&key) {
                Some(s) => {
                    s.count += 1;
                    s.last = now;
                    Some((s.namespace.clone(), s.name.clone(), s.count))
                }
                None => None,
            }
        };
        if let Some((namespace, name, count)) = repeat {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            return api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ());
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
        let base = regarding.name.clone().unwrap_or_else(|| self.controller.clone());
        let name = format!("{base}.{:x}", now.as_nanosecond());
        let object = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            event_time: Some(MicroTime(now)),
            type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
            reason: Some(event.reason.clone()),
            action: Some("Reconcile".to_string()),
            note: Some(truncate(&crate::redact::scrub_userinfo(&event.note), 1024)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &object).await?;
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() < MAX_CACHED {
            cache.insert(key, Series { namespace, name, count: 1, last: now });
        }
        Ok(())
    }
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate(note: &str, max: usize) -> String {
    if note.len() <= max {
        return note.to_string();
    }
    let mut end = max - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}
