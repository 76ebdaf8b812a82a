//! Watches: one JSON event per line, from the change log, filtered by namespace and selectors,
//! with bookmarks, `410 Expired` for compacted versions, and the timeout the client asked for.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};

use super::errors::{self, ApiError};
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, ChangeKind};
use super::{ApiServer, Request, Target, present};

/// The body of a watch response.
pub struct WatchStream(Pin<Box<dyn Stream<Item = Bytes> + Send>>);

impl Stream for WatchStream {
    type Item = Bytes;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// Default when the client gives no `timeoutSeconds` (the real server picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event a change makes for this watch, if any: an object entering the selection is
    /// ADDED and one leaving it DELETED, as the real watch cache reports them.
    fn event(&self, change: &Change) -> Option<(&'static str, Value)> {
        if change.resource.storage() != self.rt.id.storage() {
            return None;
        }
        if self.namespace.as_ref().is_some_and(|ns| *ns != change.namespace) {
            return None;
        }
        let object = present(&self.rt, &change.object);
        let now = self.selects(&object);
        let before = change.previous.as_deref().is_some_and(|p| self.selects(&present(&self.rt, p)));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Deleted, true, _) => "DELETED",
            (ChangeKind::Deleted, false, _) => return None,
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some((kind, object))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut object =
        json!({"kind": rt.kind, "apiVersion": rt.id.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &object)
}

fn expired(rv: u64, oldest: u64) -> Bytes {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({oldest})"), "reason": "Expired", "code": 410,
    });
    line("ERROR", &status)
}

/// The events of `stream` with each object printed as a one-row Table, for `kubectl get -w`:
/// the column definitions come with the first event only, as the real server leaves them out of
/// later ones (`NoHeaders`); bookmarks and errors pass as they are.
pub(super) fn as_tables(stream: WatchStream, rt: ResourceType, clock: sv_operator::clock::SharedClock) -> WatchStream {
    use futures::StreamExt as _;
    let mut headers_sent = false;
    let tables = stream.map(move |line| {
        let Ok(mut event) = serde_json::from_slice::<Value>(&line) else { return line };
        if !matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
            return line;
        }
        let mut table = super::table::render(&rt, &event["object"], &clock.now());
        if std::mem::replace(&mut headers_sent, true) {
            table["columnDefinitions"] = json!([]);
        }
        event["object"] = table;
        let mut text = event.to_string();
        text.push('\n');
        Bytes::from(text)
    });
    WatchStream(Box::pin(tables))
}

pub(super) fn start(server: &ApiServer, target: &Target, request: &Request) -> Result<WatchStream, ApiError> {
    let filter = Filter {
        rt: target.rt.clone(),
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(request.param("labelSelector").unwrap_or_default())
            .map_err(errors::bad_request)?,
        fields: FieldSelector::parse(request.param("fieldSelector").unwrap_or_default(), target.rt.custom)
            .map_err(errors::bad_request)?,
    };
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = request.flag("allowWatchBookmarks");
    let initial_events = request.flag("sendInitialEvents");
    let requested = request.param("resourceVersion").filter(|rv| !rv.is_empty() && *rv != "0");

    // Subscribing before reading the state means no change can slip between the two.
    let changes = server.subscribe();
    let epoch = server.inner.epoch.subscribe();
    let mut pending = VecDeque::new();
    let cursor = {
        let state = server.state();
        let current = state.store.resource_version();
        match (initial_events, requested) {
            (false, Some(rv)) => {
                let rv =
                    rv.parse::<u64>().map_err(|_| errors::bad_request(format!("invalid resource version: {rv:?}")))?;
                if let Err(oldest) = state.store.changes_since(rv) {
                    pending.push_back(expired(rv, oldest));
                    return Ok(WatchStream(Box::pin(futures::stream::iter(pending))));
                }
                rv
            }
            _ => {
                for (_, object) in state.store.list(&filter.rt.id, filter.namespace.as_deref()) {
                    let object = present(&filter.rt, object);
                    if filter.selects(&object) {
                        pending.push_back(line("ADDED", &object));
                    }
                }
                if initial_events {
                    pending.push_back(bookmark(&filter.rt, current, true));
                }
                current
            }
        }
    };
    let interval = server.options().bookmark_interval;
    let now = tokio::time::Instant::now();
    let run = Running {
        server: server.clone(),
        filter: Arc::new(filter),
        cursor,
        pending,
        changes,
        epoch,
        deadline: now + timeout,
        // Like the watch cache: a bookmark shortly before the timeout, and one every interval.
        next_bookmark: bookmarks.then(|| now + interval.min(timeout.saturating_sub(Duration::from_secs(1)))),
        interval,
        lagging: VecDeque::new(),
        delivered_rv: cursor,
        done: false,
    };
    Ok(WatchStream(Box::pin(futures::stream::unfold(run, Running::next))))
}

struct Running {
    server: ApiServer,
    filter: Arc<Filter>,
    cursor: u64,
    pending: VecDeque<Bytes>,
    changes: tokio::sync::watch::Receiver<u64>,
    epoch: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    next_bookmark: Option<tokio::time::Instant>,
    interval: Duration,
    /// Events held back by a watch lag ([`ApiServer::set_watch_lag`]): when each is due, its
    /// resource version, and the line.
    lagging: VecDeque<(tokio::time::Instant, u64, Bytes)>,
    /// The resource version of the last event that left the lag: bookmarks say no more.
    delivered_rv: u64,
    done: bool,
}

impl Running {
    async fn next(mut self) -> Option<(Bytes, Self)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((line, self));
            }
            if self.done {
                return None;
            }
            self.collect();
            self.release_due();
            if !self.pending.is_empty() {
                continue;
            }
            let bookmark_at = self.next_bookmark.unwrap_or(self.deadline);
            let lag_ends = self.lagging.front().map(|(due, _, _)| *due);
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { self.done = true },
                _ = self.epoch.changed() => self.done = true,
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                _ = tokio::time::sleep_until(lag_ends.unwrap_or(self.deadline)), if lag_ends.is_some() => {}
                _ = tokio::time::sleep_until(bookmark_at), if self.next_bookmark.is_some() => {
                    // A lagging watch cache bookmarks what it has delivered, not the store.
                    let rv = match self.lagging.is_empty() {
                        true => self.server.state().store.resource_version(),
                        false => self.delivered_rv,
                    };
                    self.pending.push_back(bookmark(&self.filter.rt, rv, false));
                    self.next_bookmark = Some(bookmark_at + self.interval);
                }
            }
        }
    }

    /// Moves the events after the cursor into `pending`, through the lag while there is one.
    fn collect(&mut self) {
        let lag = self.server.watch_lag();
        let now = tokio::time::Instant::now();
        // Never before an event already held back: the order of events stays the store's.
        let due = self.lagging.back().map_or(now + lag, |(held, _, _)| (*held).max(now + lag));
        let state = self.server.state();
        match state.store.changes_since(self.cursor) {
            Ok(changes) => {
                for change in changes {
                    self.cursor = change.rv;
                    if let Some((kind, object)) = self.filter.event(change) {
                        self.lagging.push_back((due, change.rv, line(kind, &object)));
                    }
                }
            }
            Err(oldest) => {
                // The watcher fell behind the log: tell it to re-list (at once: the list is current).
                self.pending.push_back(expired(self.cursor, oldest));
                self.done = true;
            }
        }
    }

    /// Moves the events whose lag is over into `pending`.
    fn release_due(&mut self) {
        let now = tokio::time::Instant::now();
        while self.lagging.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, rv, line)) = self.lagging.pop_front() {
                self.delivered_rv = rv;
                self.pending.push_back(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt as _;
    use serde_json::{Value, json};

    use crate::api::{ApiServer, Options, Request, Response};

    fn config_map(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
    }

    #[tokio::test]
    async fn a_table_watch_prints_each_object_as_a_row_with_the_headers_once() {
        let server = ApiServer::new(Options::default(), Arc::new(sv_operator::clock::SystemClock));
        server.create_object(config_map("first"), "test").expect("create");
        let mut request = Request::new(::http::Method::GET, "/api/v1/namespaces/default/configmaps?watch=true");
        request.accept = "application/json;as=Table;v=v1;g=meta.k8s.io".to_string();
        let Response::Watch(mut stream) = server.handle(request).await else { panic!("not a watch") };
        let mut next = async || -> Value {
            let line = stream.next().await.expect("an event");
            serde_json::from_slice(&line).expect("JSON")
        };
        let first = next().await;
        assert_eq!((first["type"].as_str(), first["object"]["kind"].as_str()), (Some("ADDED"), Some("Table")));
        let headers: Vec<&str> = first["object"]["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(headers.starts_with(&["Name"]) && headers.ends_with(&["Age"]), "{headers:?}");
        assert_eq!(first["object"]["rows"][0]["cells"][0], "first");

        server.create_object(config_map("second"), "test").expect("create");
        let second = next().await;
        assert_eq!(second["object"]["kind"], "Table");
        assert_eq!(second["object"]["columnDefinitions"], json!([]), "headers come once");
        assert_eq!(second["object"]["rows"][0]["cells"][0], "second");
    }

    /// A lagging watch delivers each event `lag` after its commit, in order, while reads are
    /// current; with the lag ended, events come at once again.
    #[test]
    fn a_lagging_watch_delivers_events_late_and_in_order() {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("rt");
        runtime.block_on(async {
            let server = ApiServer::new(Options::default(), Arc::new(sv_operator::clock::SystemClock));
            let rv = server.state().store.resource_version();
            let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}");
            let Response::Watch(mut stream) = server.handle(Request::new(::http::Method::GET, &path)).await else {
                panic!("not a watch")
            };
            server.set_watch_lag(std::time::Duration::from_secs(5));
            let started = tokio::time::Instant::now();
            // Read as a server's connection does: all the time.
            let reader = tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < 3 {
                    let line = stream.next().await.expect("an event");
                    let event: Value = serde_json::from_slice(&line).expect("JSON");
                    let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    seen.push((name, started.elapsed().as_secs()));
                }
                seen
            });
            tokio::task::yield_now().await;
            server.create_object(config_map("first"), "test").expect("create");
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            server.create_object(config_map("second"), "test").expect("create");
            assert!(server.state().store.resource_version() > rv + 1, "reads are current");
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            server.set_watch_lag(std::time::Duration::ZERO);
            server.create_object(config_map("third"), "test").expect("create");
            let seen = reader.await.expect("the reader");
            let expected = [("first", 5), ("second", 7), ("third", 12)].map(|(n, t)| (n.to_string(), t));
            assert_eq!(seen, expected);
        });
    }
}
