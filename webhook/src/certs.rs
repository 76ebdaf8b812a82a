//! The webhook's own certificates, so that no cert-manager is needed: a CA and a serving
//! certificate issued with rcgen, kept in a Secret, the CA put in the `caBundle` of both webhook
//! configurations, and both renewed before they expire.
//!
//! Rotation never leaves a window where the API server distrusts a serving replica:
//! - the leaf is renewed from the same CA when a third of its life is left (the bundle does not
//!   change);
//! - the CA is renewed when a third of its life is left, in steps: (1) a new CA is added to the
//!   bundle while every replica keeps serving the old leaf; (2) once both configurations carry the
//!   new bundle, a leaf from the new CA is issued and the replicas load it; (3) the old CA leaves
//!   the bundle only after [`Lifetimes::overlap`], by which time every replica serves the new leaf.
//!
//! The decisions are the pure function [`next`]; [`CertKeeper`] carries them out against the API.
//! Two replicas may both run it: every write is guarded by the Secret's resourceVersion, and the
//! `caBundle` patches are derived from the Secret, so they agree.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

/// A certificate's key: what rcgen signs with, and the PEM stored in the Secret.
pub trait CertKey: rcgen::SigningKey + Send + Sync {
    fn pem(&self) -> String;
}

impl CertKey for KeyPair {
    fn pem(&self) -> String {
        self.serialize_pem()
    }
}

/// Makes new keys and reads stored ones. Production uses ring's ([`RingKeys`]); the simulation
/// installs one whose keys and signatures follow its seed ([`set_key_maker`]), because ring draws
/// its randomness with a system call nothing can interpose.
pub trait KeyMaker: Send + Sync + 'static {
    fn generate(&self) -> Result<Box<dyn CertKey>, CertError>;
    fn read_pem(&self, pem: &str) -> Result<Box<dyn CertKey>, CertError>;
}

/// ECDSA P-256 keys from ring, through rcgen.
pub struct RingKeys;

impl KeyMaker for RingKeys {
    fn generate(&self) -> Result<Box<dyn CertKey>, CertError> {
        Ok(Box::new(KeyPair::generate()?))
    }

    fn read_pem(&self, pem: &str) -> Result<Box<dyn CertKey>, CertError> {
        Ok(Box::new(KeyPair::from_pem(pem)?))
    }
}

static KEY_MAKER: std::sync::OnceLock<Box<dyn KeyMaker>> = std::sync::OnceLock::new();

/// Replaces [`RingKeys`] for the rest of the process; only the first call counts (false after).
/// For the simulation.
pub fn set_key_maker(maker: Box<dyn KeyMaker>) -> bool {
    KEY_MAKER.set(maker).is_ok()
}

fn key_maker() -> &'static dyn KeyMaker {
    KEY_MAKER.get().map_or(&RingKeys, |maker| maker.as_ref())
}

/// Keys of the certificate Secret.
pub mod keys {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    /// Every CA the API server should trust (the current one, and the previous one while a CA
    /// rotation overlaps).
    pub const BUNDLE: &str = "ca-bundle.crt";
    pub const STATE: &str = "state.json";
}

/// How long certificates live, and how long a replaced CA stays trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub leaf: Duration,
    pub overlap: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: Duration::from_secs(3 * 365 * 24 * 3600),
            leaf: Duration::from_secs(90 * 24 * 3600),
            overlap: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the certificate Secret is incomplete or unreadable: {0}")]
    Stored(String),
    #[error("making a key: {0}")]
    Key(String),
}

/// What the Secret records besides the PEMs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertState {
    /// Common name of the current CA (leaves name it as their issuer).
    pub ca_name: String,
    pub ca_not_after: Timestamp,
    pub leaf_not_after: Timestamp,
    /// The leaf was issued by the previous CA: step (1) of a CA rotation.
    pub leaf_from_previous_ca: bool,
    /// The previous CA while it is still in the bundle, and until when.
    pub previous_ca_pem: Option<String>,
    pub previous_trusted_until: Option<Timestamp>,
}

/// The certificates as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSet {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub leaf_pem: String,
    pub leaf_key_pem: String,
    pub state: CertState,
}

impl CertSet {
    /// Every CA the API server must trust, as one PEM.
    pub fn bundle(&self) -> String {
        match &self.state.previous_ca_pem {
            Some(previous) => format!("{previous}{}", self.ca_pem),
            None => self.ca_pem.clone(),
        }
    }

    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let state = serde_json::to_vec(&self.state).unwrap_or_default();
        BTreeMap::from([
            (keys::CA_CERT.to_string(), ByteString(self.ca_pem.clone().into_bytes())),
            (keys::CA_KEY.to_string(), ByteString(self.ca_key_pem.clone().into_bytes())),
            (keys::TLS_CERT.to_string(), ByteString(self.leaf_pem.clone().into_bytes())),
            (keys::TLS_KEY.to_string(), ByteString(self.leaf_key_pem.clone().into_bytes())),
            (keys::BUNDLE.to_string(), ByteString(self.bundle().into_bytes())),
            (keys::STATE.to_string(), ByteString(state)),
        ])
    }

    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, CertError> {
        let text = |key: &str| -> Result<String, CertError> {
            let bytes = data.get(key).ok_or_else(|| CertError::Stored(format!("no key {key:?}")))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| CertError::Stored(format!("{key:?} is not text")))
        };
        let state: CertState = serde_json::from_str(&text(keys::STATE)?)
            .map_err(|e| CertError::Stored(format!("{:?}: {e}", keys::STATE)))?;
        Ok(CertSet {
            ca_pem: text(keys::CA_CERT)?,
            ca_key_pem: text(keys::CA_KEY)?,
            leaf_pem: text(keys::TLS_CERT)?,
            leaf_key_pem: text(keys::TLS_KEY)?,
            state,
        })
    }
}

/// Certificates may be used this long before they were issued (clock skew between nodes).
const BACKDATE: Duration = Duration::from_secs(3600);

fn offset(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(t)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(t)
}

fn ca_params(name: &str, now: Timestamp, not_after: Timestamp) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(sub(now, BACKDATE));
    params.not_after = offset(not_after);
    Ok(params)
}

/// A new CA: its PEM, key PEM, name and expiry.
fn issue_ca(now: Timestamp, lifetimes: &Lifetimes) -> Result<(String, String, String, Timestamp), CertError> {
    let key = key_maker().generate()?;
    let name = format!("sharedvolume-webhook-ca-{}", now.as_second());
    let not_after = add(now, lifetimes.ca);
    let cert = ca_params(&name, now, not_after)?.self_signed(&key.as_ref())?;
    Ok((cert.pem(), key.pem(), name, not_after))
}

/// A serving certificate for `dns_names` from the CA `ca_name` (rebuilt from its name and key,
/// which is all a leaf's issuer fields derive from). It never outlives its CA.
fn issue_leaf(
    ca_name: &str,
    ca_key_pem: &str,
    ca_not_after: Timestamp,
    dns_names: &[String],
    now: Timestamp,
    lifetimes: &Lifetimes,
) -> Result<(String, String, Timestamp), CertError> {
    let ca_key = key_maker().read_pem(ca_key_pem).map_err(|e| CertError::Stored(format!("the CA key: {e}")))?;
    let issuer = Issuer::new(ca_params(ca_name, now, ca_not_after)?, ca_key.as_ref());
    let key = key_maker().generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let not_after = add(now, lifetimes.leaf).min(ca_not_after);
    params.not_before = offset(sub(now, BACKDATE));
    params.not_after = offset(not_after);
    let cert = params.signed_by(&key.as_ref(), &issuer)?;
    Ok((cert.pem(), key.pem(), not_after))
}

/// Whether less than a third of the span from `issued` to `not_after` is left at `now`.
fn due(not_after: Timestamp, lifetime: Duration, now: Timestamp) -> bool {
    now >= sub(not_after, lifetime / 3)
}

/// What the keeper should store next, or None when the stored set is good as it is.
/// `bundle_published` says whether both configurations already carry `current`'s bundle.
pub fn next(
    current: Option<&CertSet>,
    bundle_published: bool,
    dns_names: &[String],
    now: Timestamp,
    lifetimes: &Lifetimes,
) -> Result<Option<CertSet>, CertError> {
    let Some(current) = current else {
        let (ca_pem, ca_key_pem, ca_name, ca_not_after) = issue_ca(now, lifetimes)?;
        let (leaf_pem, leaf_key_pem, leaf_not_after) =
            issue_leaf(&ca_name, &ca_key_pem, ca_not_after, dns_names, now, lifetimes)?;
        return Ok(Some(CertSet {
            ca_pem,
            ca_key_pem,
            leaf_pem,
            leaf_key_pem,
            state: CertState {
                ca_name,
                ca_not_after,
                leaf_not_after,
                leaf_from_previous_ca: false,
                previous_ca_pem: None,
                previous_trusted_until: None,
            },
        }));
    };
    let state = &current.state;
    // The stored set expired (the webhook was down for a long time): nothing in it can be
    // trusted any more, so start over.
    if now >= state.ca_not_after {
        return next(None, false, dns_names, now, lifetimes);
    }
    // Step (2): the new CA is published; serve a leaf from it.
    if state.leaf_from_previous_ca {
        if !bundle_published && now < state.leaf_not_after {
            return Ok(None);
        }
        let mut set = with_new_leaf(current, dns_names, now, lifetimes)?;
        set.state.leaf_from_previous_ca = false;
        set.state.previous_trusted_until = Some(add(now, lifetimes.overlap));
        return Ok(Some(set));
    }
    // Step (3): the overlap is over; trust only the current CA.
    if let Some(until) = state.previous_trusted_until
        && now >= until
    {
        let mut set = current.clone();
        set.state.previous_ca_pem = None;
        set.state.previous_trusted_until = None;
        return Ok(Some(set));
    }
    // Step (1): the CA is due; add the new one beside it, keep serving the old leaf.
    if state.previous_ca_pem.is_none() && due(state.ca_not_after, lifetimes.ca, now) {
        let (ca_pem, ca_key_pem, ca_name, ca_not_after) = issue_ca(now, lifetimes)?;
        let mut set = current.clone();
        set.state.previous_ca_pem = Some(current.ca_pem.clone());
        set.state.previous_trusted_until = None;
        set.ca_pem = ca_pem;
        set.ca_key_pem = ca_key_pem;
        set.state.ca_name = ca_name;
        set.state.ca_not_after = ca_not_after;
        set.state.leaf_from_previous_ca = true;
        return Ok(Some(set));
    }
    if due(state.leaf_not_after, lifetimes.leaf, now) || now >= state.leaf_not_after {
        return with_new_leaf(current, dns_names, now, lifetimes).map(Some);
    }
    Ok(None)
}

/// `current` with a new leaf from its current CA.
fn with_new_leaf(
    current: &CertSet,
    dns_names: &[String],
    now: Timestamp,
    lifetimes: &Lifetimes,
) -> Result<CertSet, CertError> {
    let state = &current.state;
    let (leaf_pem, leaf_key_pem, leaf_not_after) =
        issue_leaf(&state.ca_name, &current.ca_key_pem, state.ca_not_after, dns_names, now, lifetimes)?;
    let mut set = current.clone();
    set.leaf_pem = leaf_pem;
    set.leaf_key_pem = leaf_key_pem;
    set.state.leaf_not_after = leaf_not_after;
    Ok(set)
}

/// The DNS names a Service `name` in `namespace` answers to inside the cluster.
pub fn service_dns_names(name: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
        format!("{name}.{namespace}"),
        name.to_string(),
    ]
}

/// When the next decision may change something: the earliest renewal or overlap end.
pub fn next_check(set: &CertSet, lifetimes: &Lifetimes) -> Timestamp {
    let state = &set.state;
    let mut at = sub(state.leaf_not_after, lifetimes.leaf / 3).min(sub(state.ca_not_after, lifetimes.ca / 3));
    if let Some(until) = state.previous_trusted_until {
        at = at.min(until);
    }
    at
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Issued and rotated by the webhook itself (the default).
    SelfIssued(SelfIssued),
    /// PEM files kept current by something else (cert-manager mounts its Secret); re-read when
    /// they change.
    Files { cert: std::path::PathBuf, key: std::path::PathBuf },
}

/// Settings of self-issued certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfIssued {
    pub namespace: String,
    pub secret: String,
    pub service: String,
    pub mutating_configuration: String,
    pub validating_configuration: String,
    pub lifetimes: Lifetimes,
}

/// How often the stored certificate is compared with the one served.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(30);

pub mod keeper {
    //! Carries out [`super::next`] against the API server.

    use std::sync::Arc;

    use base64::Engine as _;
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use kube::{Client, ResourceExt};
    use serde_json::{Value, json};
    use sv_api::clock::SharedClock;
    use tokio_util::sync::CancellationToken;

    use super::{CertSet, RELOAD_PERIOD, SelfIssued, next, service_dns_names};
    use crate::metrics::WebhookMetrics;
    use crate::tls::ReloadableCert;

    #[derive(Debug, thiserror::Error)]
    pub enum KeeperError {
        #[error("{0}")]
        Api(#[from] kube::Error),
        #[error("{0}")]
        Cert(#[from] super::CertError),
        #[error("the stored certificate cannot be served: {0}")]
        Tls(#[from] crate::tls::TlsError),
    }

    /// The mutating and the validating configuration, as stored (None until installed).
    type Configurations = (Option<Value>, Option<Value>);

    /// Whether every webhook of both configurations carries `bundle`.
    fn bundle_published((m, v): &Configurations, bundle: &str) -> bool {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
        [m, v].iter().all(|config| {
            config.as_ref().is_some_and(|c| {
                c["webhooks"].as_array().is_some_and(|hooks| {
                    hooks.iter().all(|h| h["clientConfig"]["caBundle"].as_str() == Some(encoded.as_str()))
                })
            })
        })
    }

    pub struct CertKeeper {
        pub client: Client,
        pub settings: SelfIssued,
        pub clock: SharedClock,
        pub cert: Arc<ReloadableCert>,
        pub metrics: WebhookMetrics,
    }

    impl CertKeeper {
        /// Keeps the certificate current until `stop`.
        pub async fn run(self, stop: CancellationToken) {
            loop {
                let wait = match self.reconcile().await {
                    Ok(()) => RELOAD_PERIOD,
                    Err(error) => {
                        tracing::warn!(%error, "keeping the webhook certificate");
                        std::time::Duration::from_secs(5)
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }

        /// One round: issue or renew if due, publish the bundle, serve the stored leaf.
        pub async fn reconcile(&self) -> Result<(), KeeperError> {
            let s = &self.settings;
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &s.namespace);
            let stored = secrets.get_opt(&s.secret).await?;
            let current = match stored.as_ref().and_then(|secret| secret.data.as_ref()) {
                Some(data) => match CertSet::from_secret_data(data) {
                    Ok(set) => Some(set),
                    Err(error) => {
                        tracing::warn!(%error, secret = %s.secret, "replacing an unreadable certificate Secret");
                        None
                    }
                },
                None => None,
            };
            // Read once per round: what is published decides the next step, and is what gets patched.
            let configurations = self.configurations().await?;
            let published = current.as_ref().is_some_and(|set| bundle_published(&configurations, &set.bundle()));
            let names = service_dns_names(&s.service, &s.namespace);
            let now = self.clock.now();
            let set = match next(current.as_ref(), published, &names, now, &s.lifetimes)? {
                None => current.ok_or_else(|| super::CertError::Stored("nothing stored".to_string()))?,
                Some(set) => {
                    let mut secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(s.secret.clone()),
                            namespace: Some(s.namespace.clone()),
                            labels: Some(
                                [(sv_api::labels::PART_OF.to_string(), sv_api::labels::PART_OF_VALUE.to_string())]
                                    .into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        type_: Some("Opaque".to_string()),
                        data: Some(set.to_secret_data()),
                        ..Secret::default()
                    };
                    // Guarded by the resourceVersion: of two replicas, one wins, the other reads
                    // the winner's set next round.
                    match &stored {
                        Some(old) => {
                            secret.metadata.resource_version = old.resource_version();
                            secrets.replace(&s.secret, &PostParams::default(), &secret).await?;
                        }
                        None => {
                            secrets.create(&PostParams::default(), &secret).await?;
                        }
                    }
                    tracing::info!(
                        ca_expires = %set.state.ca_not_after,
                        leaf_expires = %set.state.leaf_not_after,
                        overlapping = set.state.previous_ca_pem.is_some(),
                        "stored a new webhook certificate"
                    );
                    set
                }
            };
            self.publish_bundle(configurations, &set.bundle()).await?;
            self.cert.set_pem(set.leaf_pem.as_bytes(), set.leaf_key_pem.as_bytes())?;
            self.metrics.set_certificate_expiry(set.state.leaf_not_after.as_second());
            Ok(())
        }

        async fn configurations(&self) -> Result<Configurations, kube::Error> {
            let s = &self.settings;
            let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
            let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            let m = mutating.get_opt(&s.mutating_configuration).await?;
            let v = validating.get_opt(&s.validating_configuration).await?;
            Ok((m.and_then(|c| serde_json::to_value(c).ok()), v.and_then(|c| serde_json::to_value(c).ok())))
        }

        /// Sets `caBundle` of every webhook of both configurations; a configuration that does not
        /// exist yet (installed after the webhook) is patched on a later round.
        async fn publish_bundle(&self, (m, v): Configurations, bundle: &str) -> Result<(), kube::Error> {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
            let s = &self.settings;
            for (config, mutating) in [(m, true), (v, false)] {
                let Some(config) = config else { continue };
                let mut ops = Vec::new();
                for (index, hook) in config["webhooks"].as_array().into_iter().flatten().enumerate() {
                    if hook["clientConfig"]["caBundle"].as_str() != Some(encoded.as_str()) {
                        // `test` first: if the list changed since it was read, the patch fails
                        // and the next round starts over.
                        ops.push(
                            json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": hook["name"]}),
                        );
                        ops.push(json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}));
                    }
                }
                if ops.is_empty() {
                    continue;
                }
                let patch: json_patch::Patch =
                    serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
                let params = PatchParams::default();
                if mutating {
                    let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
                    api.patch(&s.mutating_configuration, &params, &Patch::Json::<()>(patch)).await?;
                } else {
                    let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
                    api.patch(&s.validating_configuration, &params, &Patch::Json::<()>(patch)).await?;
                }
                tracing::info!(configuration = %config["metadata"]["name"], "published the CA bundle");
            }
            Ok(())
        }
    }
}
