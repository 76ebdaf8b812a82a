//! The kubelet's readiness probe: an HTTP GET of the program's endpoint over the simulated network,
//! every `periodSeconds`, bounded by `timeoutSeconds`; Ready after a success, not Ready after
//! `failureThreshold` failures in a row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use sv_common::monotonic::MonotonicInstant as Instant;

use crate::net::http_request;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HttpProbe {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

impl HttpProbe {
    /// The container's `readinessProbe.httpGet`, with its port resolved (a number, or the name of
    /// one of the container's ports). Other probe kinds are not modelled: the container counts as
    /// Ready, as one without a probe does.
    pub fn readiness(container: &Value) -> Option<Self> {
        let probe = &container["readinessProbe"];
        let get = &probe["httpGet"];
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64(),
            Value::String(name) => container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .or_else(|| name.parse().ok()),
            _ => None,
        }?;
        let seconds = |key: &str, default: u64| Duration::from_secs(probe[key].as_u64().unwrap_or(default).max(1));
        Some(Self {
            path: get["path"].as_str().unwrap_or("/").to_string(),
            port: u16::try_from(port).ok()?,
            period: seconds("periodSeconds", 10),
            timeout: seconds("timeoutSeconds", 1),
            failure_threshold: probe["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
        })
    }
}

/// Probe results so far. The probe itself runs as a task on the kubelet's host; its answer is
/// picked up on the kubelet's next pass. Times are the simulation's ([`Instant`]): this state
/// outlives the kubelet host's runtime when the API server restarts, and a tokio instant from the
/// old runtime compared under the new one measures wall time (probes then paused for a span the
/// machine's load decided).
#[derive(Debug, Default)]
pub(super) struct ProbeState {
    ready: bool,
    failures: u32,
    last_started: Option<Instant>,
    in_flight: Option<(Instant, Arc<Mutex<Option<bool>>>)>,
}

impl ProbeState {
    /// Takes a finished probe's answer, starts the next one when due, and says whether the pod is
    /// Ready.
    pub fn poll(&mut self, host: &str, probe: &HttpProbe) -> bool {
        let now = Instant::now();
        if let Some((started, slot)) = &self.in_flight {
            let answer = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A probe whose task died with the kubelet's host never answers: a failure.
            let answer = answer.or_else(|| (started.elapsed() > probe.timeout * 2).then_some(false));
            if let Some(success) = answer {
                self.in_flight = None;
                self.record(success, probe);
            }
        }
        let due = self.last_started.is_none_or(|last| last.elapsed() >= probe.period);
        if self.in_flight.is_none() && due && tokio::runtime::Handle::try_current().is_ok() {
            let slot = Arc::new(Mutex::new(None));
            let (host, answer, probe) = (host.to_string(), slot.clone(), probe.clone());
            tokio::spawn(async move {
                let success = get(&host, &probe).await;
                *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(success);
            });
            self.last_started = Some(now);
            self.in_flight = Some((now, slot));
        }
        self.ready
    }

    fn record(&mut self, success: bool, probe: &HttpProbe) {
        if success {
            self.failures = 0;
            self.ready = true;
        } else {
            self.failures += 1;
            if self.failures >= probe.failure_threshold {
                self.ready = false;
            }
        }
    }
}

/// One probe: a 2xx or 3xx answer within the timeout is a success, as for the kubelet.
async fn get(host: &str, probe: &HttpProbe) -> bool {
    let request = http::Request::get(probe.path.as_str())
        .header(http::header::HOST, format!("{host}:{}", probe.port))
        .header(http::header::USER_AGENT, "kube-probe/1.36")
        .body(Full::new(Bytes::new()));
    let Ok(request) = request else { return false };
    match http_request(host, probe.port, request, probe.timeout).await {
        Ok((status, _)) => status.is_success() || status.is_redirection(),
        Err(error) => {
            tracing::debug!(%host, path = %probe.path, %error, "readiness probe failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_and_defaults() {
        let container = serde_json::json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        });
        let probe = HttpProbe::readiness(&container).expect("a probe");
        assert_eq!(probe.port, 8080);
        assert_eq!(probe.period, Duration::from_secs(5));
        assert_eq!(probe.timeout, Duration::from_secs(1));
        assert_eq!(probe.failure_threshold, 3);
        assert_eq!(HttpProbe::readiness(&serde_json::json!({"readinessProbe": {"exec": {}}})), None);
    }

    /// The state outlives the kubelet's runtime (an API server restart makes a new one): the next
    /// probe is due a period after the last on the simulation's clock, whatever the runtimes.
    #[test]
    fn the_next_probe_is_due_by_the_simulations_clock_across_runtimes() {
        std::thread::spawn(|| {
            let now = std::rc::Rc::new(std::cell::Cell::new(Duration::from_secs(60)));
            let source = now.clone();
            sv_common::monotonic::install_thread_source(move || Some(source.get()));
            let probe = HttpProbe {
                path: "/".into(),
                port: 1,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
            };
            let mut state = ProbeState::default();
            let runtime = || tokio::runtime::Builder::new_current_thread().start_paused(true).build().expect("runtime");
            let first = runtime();
            first.block_on(async { tokio::time::advance(Duration::from_secs(3600)).await });
            first.block_on(async { state.poll("host", &probe) });
            let started = state.last_started.expect("a probe started");
            drop(first);
            now.set(Duration::from_secs(65));
            let second = runtime();
            second.block_on(async { state.poll("host", &probe) });
            assert_eq!(state.last_started, Some(started), "not due within the period");
            now.set(Duration::from_secs(71));
            second.block_on(async { state.poll("host", &probe) });
            assert!(state.last_started.is_some_and(|at| at > started), "due a period later");
            sv_common::monotonic::uninstall_thread_source();
        })
        .join()
        .expect("the thread");
    }

    #[test]
    fn ready_after_a_success_and_not_ready_after_the_threshold() {
        let probe = HttpProbe {
            path: "/".into(),
            port: 1,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 2,
        };
        let mut state = ProbeState::default();
        state.record(true, &probe);
        assert!(state.ready);
        state.record(false, &probe);
        assert!(state.ready, "one failure is below the threshold");
        state.record(false, &probe);
        assert!(!state.ready);
    }
}
