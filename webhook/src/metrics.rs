//! Prometheus metrics of the webhook, under `sharedvolume_webhook_`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `mutate` or `validate`.
    pub endpoint: String,
    pub operation: String,
    pub kind: String,
    /// `allowed`, `patched`, `denied` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    reviews: Family<ReviewLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    storage_created: Counter,
    storage_errors: Counter,
    cert_expiry: Gauge,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reviews: Family::default(),
            denials: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0])
            }),
            storage_created: Counter::default(),
            storage_errors: Counter::default(),
            cert_expiry: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sharedvolume_webhook");
        r.register(
            "reviews",
            "Admission reviews answered, by endpoint, operation, kind and result",
            metrics.reviews.clone(),
        );
        r.register("denials", "Admission reviews denied, by reason", metrics.denials.clone());
        r.register("review_duration_seconds", "Time from request to answer", metrics.latency.clone());
        r.register("consumer_storage_created", "Consumer PV/PVC pairs created", metrics.storage_created.clone());
        r.register(
            "consumer_storage_errors",
            "Failed creations of consumer PV/PVC pairs",
            metrics.storage_errors.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            metrics.cert_expiry.clone(),
        );
        metrics
    }

    pub fn review(&self, endpoint: &str, operation: &str, kind: &str, result: &str, took: Duration) {
        let labels = ReviewLabels {
            endpoint: endpoint.to_string(),
            operation: operation.to_string(),
            kind: kind.to_string(),
            result: result.to_string(),
        };
        self.reviews.get_or_create(&labels).inc();
        self.latency.get_or_create(&EndpointLabels { endpoint: endpoint.to_string() }).observe(took.as_secs_f64());
    }

    pub fn denial(&self, endpoint: &str, reason: &str) {
        self.denials.get_or_create(&DenialLabels { endpoint: endpoint.to_string(), reason: reason.to_string() }).inc();
    }

    pub fn storage_created(&self) {
        self.storage_created.inc();
    }

    pub fn storage_error(&self) {
        self.storage_errors.inc();
    }

    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.cert_expiry.set(unix_seconds);
    }
}
