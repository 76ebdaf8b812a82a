//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: a holder renews the
//! lease every `retry_period`; others take it over once they have seen the same record, unchanged,
//! for `lease_duration` (their own observation time, so clock skew between replicas does not
//! matter). Timing runs on tokio's clock, timestamps on the injected clock, so the simulation
//! replays elections exactly.
//!
//! The operator elects its leader with it; the syncer uses it so that only one syncer pod of a
//! volume publishes (a replacement started while the old pod is cut off must not publish beside
//! it). A holder that must not act after losing the lease watches [`LeaderElector::renewals`]
//! and acts only while its last renewal is younger than a deadline shorter than the lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::SharedClock;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// How long others wait, after the last renewal they saw, before taking the lease over.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down; shorter than `lease_duration`, so
    /// it stops acting before anyone else may start (client-go: 15 s, 10 s, 2 s).
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            lease_name: "sharedvolume-operator-leader".to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why an election round failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Api(kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Whether this replica leads, as seen by the election loop.
pub type LeaderState = watch::Receiver<bool>;

/// Runs the election until `shutdown` resolves, publishing leadership on the returned channel.
/// On shutdown a leader releases the lease so a standby takes over at once.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    clock: SharedClock,
    observed: Option<(String, Instant)>,
    renewals: watch::Sender<Option<Instant>>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderConfig, clock: SharedClock) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config, clock, observed: None, renewals: watch::channel(None).0 }
    }

    /// When this replica last renewed the lease it holds (`None` while it holds none). The
    /// instant is taken before the renewal was sent, so it errs on the safe side.
    pub fn renewals(&self) -> watch::Receiver<Option<Instant>> {
        self.renewals.subscribe()
    }

    pub async fn run(mut self, state: watch::Sender<bool>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut leading = false;
        let mut last_renewal = Instant::now();
        loop {
            let attempt = Instant::now();
            // Each attempt is cut off at the renew deadline: a request hanging on a partitioned
            // connection must not keep a leader that can no longer renew from stepping down.
            let result = match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(result) => result,
                Err(_) => Err(RenewError::TimedOut(self.config.renew_deadline)),
            };
            match result {
                Ok(true) => {
                    last_renewal = attempt;
                    self.renewals.send_replace(Some(attempt));
                    if !leading {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "became leader");
                    }
                    leading = true;
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!(identity = %self.config.identity, "lost the lease to another replica");
                    }
                    leading = false;
                    self.renewals.send_replace(None);
                }
                Err(error) => {
                    tracing::warn!(%error, "lease update failed");
                    // A leader that could not renew within the renew deadline steps down before
                    // the lease runs out for the others, so two never act at once.
                    if leading && last_renewal.elapsed() >= self.config.renew_deadline {
                        tracing::warn!("could not renew the lease in time; stepping down");
                        leading = false;
                        self.renewals.send_replace(None);
                    }
                }
            }
            state.send_if_modified(|current| {
                let changed = *current != leading;
                *current = leading;
                changed
            });
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        self.renewals.send_replace(None);
        if leading {
            if let Err(error) = self.release().await {
                tracing::warn!(%error, "could not release the lease");
            }
            state.send_replace(false);
        }
    }

    /// One round of the election; returns whether this replica now holds the lease.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, RenewError> {
        let now = MicroTime(self.clock.now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await.map_err(RenewError::Api)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.lease_name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(RenewError::Api(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = format!(
            "{}|{:?}|{:?}",
            holder.as_deref().unwrap_or_default(),
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_transitions
        );
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let is_mine = holder.as_deref() == Some(self.config.identity.as_str());
        let held_by_other = holder.is_some() && !is_mine;
        let lease_secs = spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        if held_by_other && observed_at.elapsed() < lease_secs {
            return Ok(false);
        }
        if !is_mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // Replace carries the resourceVersion we read, so two candidates cannot both win.
        match self.api.replace(&self.config.lease_name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(RenewError::Api(e)),
        }
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(self.clock.now()));
        self.api.replace(&self.config.lease_name, &PostParams::default(), &lease).await.map(|_| ())
    }
}
