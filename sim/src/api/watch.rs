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
    let window_start = server.watch_view(request.peer).window_start;
    // A stale replica lists its copy; the changes after it come from the store's log, held back.
    let replica = server.stale_replica(request.peer);
    let cursor = {
        let state = server.state();
        let listed = replica.as_deref().unwrap_or(&state.store);
        let current = listed.resource_version();
        match (initial_events, requested) {
            (false, Some(rv)) => {
                let rv =
                    rv.parse::<u64>().map_err(|_| errors::bad_request(format!("invalid resource version: {rv:?}")))?;
                let available = match state.store.changes_since(rv) {
                    Err(oldest) => Err(oldest),
                    Ok(_) if rv < window_start => Err(window_start),
                    Ok(_) => Ok(()),
                };
                if let Err(oldest) = available {
                    pending.push_back(expired(rv, oldest));
                    return Ok(WatchStream(Box::pin(futures::stream::iter(pending))));
                }
                rv
            }
            _ => {
                for (_, object) in listed.list(&filter.rt.id, filter.namespace.as_deref()) {
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
        peer: request.peer,
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
    /// The client, whose replica may be a stale one.
    peer: Option<std::net::IpAddr>,
    filter: Arc<Filter>,
    cursor: u64,
    pending: VecDeque<Bytes>,
    changes: tokio::sync::watch::Receiver<u64>,
    epoch: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    next_bookmark: Option<tokio::time::Instant>,
    interval: Duration,
    /// Events held back by a watch lag ([`ApiServer::set_watch_lag`]), a stall or a stale
    /// replica, in order.
    lagging: VecDeque<Held>,
    /// The resource version of the last event that left the lag: bookmarks say no more.
    delivered_rv: u64,
    done: bool,
}

/// An event a watch holds back.
struct Held {
    /// When the lag lets it go; `None` while a stall or a stale replica holds it.
    due: Option<tokio::time::Instant>,
    rv: u64,
    line: Bytes,
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
            let view = self.server.watch_view(self.peer);
            self.collect(&view);
            self.release_due(&view);
            if !self.pending.is_empty() {
                continue;
            }
            let bookmark_at = self.next_bookmark.unwrap_or(self.deadline);
            let lag_ends = self.lagging.front().and_then(|held| held.due);
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { self.done = true },
                _ = self.epoch.changed() => self.done = true,
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                _ = tokio::time::sleep_until(lag_ends.unwrap_or(self.deadline)), if lag_ends.is_some() => {}
                _ = tokio::time::sleep_until(bookmark_at), if self.next_bookmark.is_some() => {
                    // A lagging watch cache bookmarks what it has delivered, not the store; a
                    // stalled connection carries nothing.
                    let rv = match (self.lagging.is_empty(), view.frozen_at) {
                        _ if view.stalled => None,
                        (false, _) => Some(self.delivered_rv),
                        (true, Some(frozen_at)) => Some(frozen_at.max(self.delivered_rv)),
                        (true, None) => Some(self.server.state().store.resource_version()),
                    };
                    if let Some(rv) = rv {
                        self.pending.push_back(bookmark(&self.filter.rt, rv, false));
                    }
                    self.next_bookmark = Some(bookmark_at + self.interval);
                }
            }
        }
    }

    /// Moves the events after the cursor into `lagging`; ends the watch with `410 Gone` if it
    /// holds an event from before the history it could resume from (compacted during a stall).
    fn collect(&mut self, view: &super::WatchViewNow) {
        if let Some(held) = self.lagging.front()
            && held.rv <= view.window_start
        {
            self.lagging.clear();
            self.pending.push_back(expired(self.delivered_rv, view.window_start));
            self.done = true;
            return;
        }
        let now = tokio::time::Instant::now();
        let state = self.server.state();
        match state.store.changes_since(self.cursor) {
            Ok(changes) => {
                for change in changes {
                    self.cursor = change.rv;
                    let Some((kind, object)) = self.filter.event(change) else { continue };
                    // Never before an event already held back: the order of events stays the store's.
                    let due = match self.lagging.back().map(|held| held.due) {
                        _ if view.stalled || view.frozen_at.is_some_and(|at| change.rv > at) => None,
                        Some(None) => None,
                        Some(Some(held)) => Some(held.max(now + view.lag)),
                        None => Some(now + view.lag),
                    };
                    self.lagging.push_back(Held { due, rv: change.rv, line: line(kind, &object) });
                }
            }
            Err(oldest) => {
                // The watcher fell behind the log: tell it to re-list (at once: the list is current).
                self.pending.push_back(expired(self.cursor, oldest));
                self.done = true;
            }
        }
    }

    /// Moves the events that may go now into `pending`: their lag is over, or the stall or the
    /// stale replica that held them has ended.
    fn release_due(&mut self, view: &super::WatchViewNow) {
        let now = tokio::time::Instant::now();
        while let Some(held) = self.lagging.front() {
            let free = match held.due {
                Some(due) => due <= now,
                None => !view.stalled && view.frozen_at.is_none_or(|at| held.rv <= at),
            };
            if !free {
                break;
            }
            if let Some(held) = self.lagging.pop_front() {
                self.delivered_rv = held.rv;
                self.pending.push_back(held.line);
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

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("rt")
    }

    async fn watch_from(server: &ApiServer, rv: Option<u64>, peer: Option<std::net::IpAddr>) -> Response {
        let mut path = "/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true".to_string();
        if let Some(rv) = rv {
            path.push_str(&format!("&resourceVersion={rv}"));
        }
        let mut request = Request::new(::http::Method::GET, &path);
        request.peer = peer;
        server.handle(request).await
    }

    async fn next_event(stream: &mut super::WatchStream) -> (String, String) {
        let line = stream.next().await.expect("an event");
        let event: Value = serde_json::from_slice(&line).expect("JSON");
        let what = match event["type"].as_str() {
            Some("ERROR") => event["object"]["code"].to_string(),
            Some("BOOKMARK") => event["object"]["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
            _ => event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        };
        (event["type"].as_str().unwrap_or_default().to_string(), what)
    }

    async fn delete_config_map(server: &ApiServer, name: &str) {
        let path = format!("/api/v1/namespaces/default/configmaps/{name}");
        let response = server.handle(Request::new(::http::Method::DELETE, &path)).await;
        assert_eq!(response.code(), 200, "delete {name}");
    }

    /// While watches stall they deliver nothing; when the stall ends the history it covered is
    /// gone: a watch that missed events ends with 410 and no watch resumes from before, so a
    /// client re-lists and never sees the states in between.
    #[test]
    fn a_stalled_watch_ends_with_gone_and_its_history_is_compacted() {
        paused_runtime().block_on(async {
            let server = ApiServer::new(Options::default(), Arc::new(sv_operator::clock::SystemClock));
            let before = server.state().store.resource_version();
            let Response::Watch(mut stream) = watch_from(&server, Some(before), None).await else {
                panic!("not a watch")
            };
            server.create_object(config_map("seen"), "test").expect("create");
            assert_eq!(next_event(&mut stream).await, ("ADDED".into(), "seen".into()));
            let seen_at = server.state().store.resource_version();

            server.stall_watches(true);
            server.create_object(config_map("unseen"), "test").expect("create");
            delete_config_map(&server, "unseen").await;
            let nothing = tokio::time::timeout(std::time::Duration::from_secs(120), next_event(&mut stream)).await;
            assert!(nothing.is_err(), "a stalled watch delivers nothing, not even bookmarks: {nothing:?}");

            server.stall_watches(false);
            assert_eq!(next_event(&mut stream).await, ("ERROR".into(), "410".into()));
            let Response::Watch(mut resumed) = watch_from(&server, Some(seen_at), None).await else {
                panic!("not a watch")
            };
            assert_eq!(next_event(&mut resumed).await, ("ERROR".into(), "410".into()), "resuming from before");
            // Watching from now on works as before.
            let now = server.state().store.resource_version();
            let Response::Watch(mut fresh) = watch_from(&server, Some(now), None).await else { panic!("not a watch") };
            server.create_object(config_map("after"), "test").expect("create");
            assert_eq!(next_event(&mut fresh).await, ("ADDED".into(), "after".into()));
        });
    }

    /// A client on a stale replica lists (at `resourceVersion=0`) and watches the cluster as it
    /// was when the replica stopped, fails to watch from a newer version after 3 s, and gets
    /// the changes in order once the replica catches up; other clients and consistent reads see
    /// the store as it is.
    #[test]
    fn a_stale_replica_serves_the_past_until_it_catches_up() {
        paused_runtime().block_on(async {
            let server = ApiServer::new(Options::default(), Arc::new(sv_operator::clock::SystemClock));
            let peer: std::net::IpAddr = [192, 168, 0, 7].into();
            server.create_object(config_map("old"), "test").expect("create");
            server.set_stale_replica(peer, true);
            assert!(server.stale_replica(Some(peer)).is_none(), "the client is served as before until it restarts");
            server.serve_from_stale_replica(peer);
            let frozen_at = server.state().store.resource_version();
            server.create_object(config_map("new"), "test").expect("create");
            delete_config_map(&server, "old").await;
            let current = server.state().store.resource_version();

            let list = async |rv: Option<&str>, peer: Option<std::net::IpAddr>| -> (Vec<String>, String) {
                let mut path = "/api/v1/namespaces/default/configmaps".to_string();
                if let Some(rv) = rv {
                    path.push_str(&format!("?resourceVersion={rv}"));
                }
                let mut request = Request::new(::http::Method::GET, &path);
                request.peer = peer;
                let Response::Json { body, .. } = server.handle(request).await else { panic!("not a list") };
                let names = body["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                (names, body["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string())
            };
            assert_eq!(list(Some("0"), Some(peer)).await, (vec!["old".to_string()], frozen_at.to_string()));
            assert_eq!(list(None, Some(peer)).await, (vec!["new".to_string()], current.to_string()), "consistent");
            assert_eq!(list(Some("0"), None).await, (vec!["new".to_string()], current.to_string()), "other clients");

            let asked = tokio::time::Instant::now();
            let too_new = watch_from(&server, Some(current), Some(peer)).await;
            assert_eq!((too_new.code(), asked.elapsed().as_secs()), (504, 3));

            let Response::Watch(mut stream) = watch_from(&server, Some(frozen_at), Some(peer)).await else {
                panic!("not a watch")
            };
            // Bookmarks say no more than the replica has.
            assert_eq!(next_event(&mut stream).await, ("BOOKMARK".into(), frozen_at.to_string()));
            server.set_stale_replica(peer, false);
            assert_eq!(next_event(&mut stream).await, ("ADDED".into(), "new".into()));
            assert_eq!(next_event(&mut stream).await, ("DELETED".into(), "old".into()));
        });
    }
}
