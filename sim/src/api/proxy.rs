//! kube-proxy: where a connection to a Service goes. A client names a Service by its ClusterIP or
//! its DNS name and a Service port; the connection goes to a ready endpoint of the Service (the
//! Endpoints object's `addresses`, never its `notReadyAddresses`) on the endpoint port of the same
//! name, and from there to the simulated host that runs that pod's program.
//!
//! As with iptables-mode kube-proxy, the choice is made when a connection opens: a connection
//! already open stays with its pod (and breaks with it); the next one goes to whatever is ready
//! then. Not modelled: session affinity, traffic policies, topology hints, and load balancing
//! over several ready endpoints (the first ready one is taken, so runs stay replayable).

use std::sync::Arc;

use serde_json::Value;

use super::{ApiServer, State};

/// Why a connection to a Service cannot be made, in the words a client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No Service has this address or name.
    #[error("no Service answers at {0} (connection timed out)")]
    NoService(String),
    #[error("service \"{namespace}/{name}\" not found")]
    ServiceNotFound { namespace: String, name: String },
    #[error("service \"{namespace}/{name}\" has no port {port}")]
    NoPort { namespace: String, name: String, port: u16 },
    /// The Service exists but no ready pod backs it: a real connection is refused (kube-proxy's
    /// REJECT rule), a webhook call says so.
    #[error("no endpoints available for service \"{name}\"")]
    NoEndpoints { name: String },
}

/// A ready backend: the host of the pod's program and the port it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub host: String,
    pub port: u16,
}

/// A handle on the cluster's Services that does not keep the API server alive: the pod runtime
/// holds one, and the API server holds the pod runtime.
#[derive(Clone)]
pub struct ServiceProxy(std::sync::Weak<super::Inner>);

impl ServiceProxy {
    /// [`ApiServer::service_route`], while the API server exists.
    pub fn route(&self, address: &str, port: u16) -> Result<Backend, RouteError> {
        let api = ApiServer { inner: self.0.upgrade().ok_or_else(|| RouteError::NoService(address.to_string()))? };
        api.service_route(address, port)
    }
}

impl ApiServer {
    /// A proxy to this server's Services that does not keep the server alive.
    pub fn service_proxy(&self) -> ServiceProxy {
        ServiceProxy(Arc::downgrade(&self.inner))
    }

    /// Where a connection to Service `namespace/name` on Service port `port` goes now.
    pub fn service_backend(&self, namespace: &str, name: &str, port: u16) -> Result<Backend, RouteError> {
        let state = self.state();
        let service = get(&state, "services", namespace, name)
            .ok_or_else(|| RouteError::ServiceNotFound { namespace: namespace.into(), name: name.into() })?;
        self.backend_of(&state, &service, port)
    }

    /// Where a connection to `address:port` goes now, `address` being a Service's ClusterIP or
    /// one of its DNS names (`name.namespace`, `name.namespace.svc`, `...svc.cluster.local`).
    pub fn service_route(&self, address: &str, port: u16) -> Result<Backend, RouteError> {
        let state = self.state();
        let service = state
            .registry
            .find("", "v1", "services")
            .into_iter()
            .flat_map(|rt| state.store.list(&rt.id, None))
            .map(|(_, s)| s)
            .find(|s| answers_at(s, address))
            .cloned()
            .ok_or_else(|| RouteError::NoService(address.to_string()))?;
        self.backend_of(&state, &service, port)
    }

    fn backend_of(&self, state: &State, service: &Value, port: u16) -> Result<Backend, RouteError> {
        let namespace = service["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let service_port = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_u64() == Some(u64::from(port)))
            .ok_or_else(|| RouteError::NoPort { namespace: namespace.into(), name: name.into(), port })?;
        let no_endpoints = || RouteError::NoEndpoints { name: name.to_string() };
        let endpoints = get(state, "endpoints", namespace, name).ok_or_else(no_endpoints)?;
        let hosts = self.inner.pod_hosts.read().unwrap_or_else(|e| e.into_inner()).clone();
        endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|subset| {
                // The endpoint port of this Service port: by name (a named targetPort resolves per
                // pod), or the only one.
                let ports = subset["ports"].as_array()?;
                let target = match service_port["name"].as_str() {
                    Some(port_name) => ports.iter().find(|p| p["name"] == port_name),
                    None => ports.first(),
                }?;
                let port = u16::try_from(target["port"].as_u64()?).ok()?;
                let host = subset["addresses"]
                    .as_array()?
                    .iter()
                    .find_map(|a| hosts.as_ref()?(a["targetRef"]["uid"].as_str()?))?;
                Some(Backend { host, port })
            })
            .ok_or_else(no_endpoints)
    }
}

fn get(state: &State, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
    let rt = state.registry.find("", "v1", plural)?;
    state.store.get(&rt.id, namespace, name).cloned()
}

/// Whether a client that dials `address` reaches this Service.
pub(crate) fn answers_at(service: &Value, address: &str) -> bool {
    let (Some(name), Some(namespace)) =
        (service["metadata"]["name"].as_str(), service["metadata"]["namespace"].as_str())
    else {
        return false;
    };
    let ips = service["spec"]["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str);
    ips.chain(service["spec"]["clusterIP"].as_str()).any(|ip| ip == address && ip != "None")
        || [
            format!("{name}.{namespace}"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ]
        .iter()
        .any(|dns| dns == address)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_service_answers_at_its_cluster_ip_and_its_dns_names() {
        let service = json!({"metadata": {"name": "nfs", "namespace": "team-a"},
                             "spec": {"clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"]}});
        for address in ["10.96.0.12", "nfs.team-a", "nfs.team-a.svc", "nfs.team-a.svc.cluster.local"] {
            assert!(answers_at(&service, address), "{address}");
        }
        for address in ["10.96.0.13", "nfs", "nfs.team-b.svc", "None"] {
            assert!(!answers_at(&service, address), "{address}");
        }
        let headless = json!({"metadata": {"name": "h", "namespace": "a"}, "spec": {"clusterIP": "None"}});
        assert!(!answers_at(&headless, "None"));
    }
}
