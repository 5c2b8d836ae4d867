//! Leader election on a `coordination.k8s.io/v1` Lease: one replica reconciles at a time.
//!
//! Clocks are never compared across machines: a follower takes the Lease over only after it has
//! itself watched the holder's `renewTime` stay unchanged for a whole lease duration, and a
//! leader stops writing once two thirds of a duration have passed since its last successful
//! renewal. The two windows cannot overlap, so two replicas never write at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The shared view of leadership: `true` while this replica may write.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Instant>>,
    valid_for: Duration,
}

impl Leadership {
    /// Whether this replica holds the Lease now (its last renewal is recent enough).
    pub fn is_leader(&self) -> bool {
        self.rx
            .borrow()
            .is_some_and(|renewed| renewed.elapsed() < self.valid_for)
    }

    /// Waits until leadership changes hands in either direction: gained, lost, or lapsed for
    /// want of a renewal. A renewal that keeps it is no change (it would wake the provisioner
    /// for a pass every few seconds at rest).
    pub async fn changed(&mut self) {
        let was = self.is_leader();
        loop {
            let lapses = (*self.rx.borrow()).map(|renewed| renewed + self.valid_for);
            let lapse = async {
                match lapses {
                    Some(at) if was => tokio::time::sleep_until(at.into()).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                sent = self.rx.changed() => {
                    if sent.is_err() {
                        // The elector is gone: only a lapse can still change anything.
                        if !was {
                            std::future::pending::<()>().await;
                        }
                        if let Some(at) = lapses {
                            tokio::time::sleep_until(at.into()).await;
                        }
                        return;
                    }
                }
                _ = lapse => {}
            }
            if self.is_leader() != was {
                return;
            }
        }
    }
}

/// Runs the election until `shutdown` turns true; then releases the Lease if held.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    tx: watch::Sender<Option<Instant>>,
    /// The holder and renewTime last seen, and when this replica first saw them.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, seconds: u32) -> (Self, Leadership) {
        let duration = Duration::from_secs(u64::from(seconds));
        let (tx, rx) = watch::channel(None);
        let leadership = Leadership {
            rx,
            valid_for: duration * 2 / 3,
        };
        let elector = Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            tx,
            observed: None,
        };
        (elector, leadership)
    }

    fn lease(&self, rv: Option<String>, acquire: Option<MicroTime>, transitions: i32) -> Lease {
        let now = MicroTime(Utc::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: rv,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs() as i32),
                acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// One round: acquire, renew or observe. Returns whether this replica leads.
    pub async fn round(&mut self) -> Result<bool, kube::Error> {
        let current = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = self.lease(None, None, 0);
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(self.renewed()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.lost()),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let seen = (holder.clone(), spec.renew_time.clone());
        let since = match &self.observed {
            Some((h, r, at)) if (h, r) == (&seen.0, &seen.1) => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((seen.0, seen.1, now));
                now
            }
        };
        let expired = holder.is_none() || since.elapsed() >= self.duration;
        if !ours && !expired {
            return Ok(self.lost());
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire = if ours { spec.acquire_time } else { None };
        let lease = self.lease(
            current.metadata.resource_version.clone(),
            acquire,
            transitions,
        );
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(self.renewed()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.lost()),
            Err(e) => Err(e),
        }
    }

    fn renewed(&mut self) -> bool {
        let _ = self.tx.send(Some(Instant::now()));
        true
    }

    fn lost(&mut self) -> bool {
        if self.tx.borrow().is_some() {
            let _ = self.tx.send(None);
        }
        false
    }

    /// Gives the Lease up (on shutdown) so a follower need not wait out the duration.
    pub async fn release(&mut self) {
        if self.tx.borrow().is_none() {
            return;
        }
        let _ = self.tx.send(None);
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            if let Some(spec) = lease.spec.as_mut() {
                if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                    spec.holder_identity = None;
                    let _ = self
                        .api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await;
                }
            }
        }
    }

    /// Campaigns every third of a duration until `shutdown` says stop.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let period = self.duration / 3;
        loop {
            match self.round().await {
                Ok(leading) => tracing::debug!(leading, lease = %self.name, "lease round"),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease round failed");
                    // Without a renewal the claim lapses on its own (Leadership::is_leader).
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(valid_for: Duration) -> (watch::Sender<Option<Instant>>, Leadership) {
        let (tx, rx) = watch::channel(Some(Instant::now()));
        (tx, Leadership { rx, valid_for })
    }

    /// A bound on a hang, not a figure.
    const HANG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn renewals_are_no_change_and_a_loss_is() {
        let (tx, leadership) = leadership(Duration::from_secs(60));
        let mut waiting = leadership.clone();
        let waiter = tokio::spawn(async move {
            waiting.changed().await;
            waiting.is_leader()
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(Some(Instant::now())).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(None).unwrap();
        let leading_when_woken = tokio::time::timeout(HANG, waiter).await.unwrap().unwrap();
        assert!(!leading_when_woken, "woken by a renewal, not by the loss");
    }

    #[tokio::test]
    async fn a_claim_that_lapses_is_a_change_and_a_gain_is_one() {
        let (tx, mut leadership) = leadership(Duration::from_millis(200));
        tokio::time::timeout(HANG, leadership.changed())
            .await
            .unwrap();
        assert!(!leadership.is_leader());
        let mut waiting = leadership.clone();
        let waiter = tokio::spawn(async move {
            waiting.changed().await;
            waiting.is_leader()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Some(Instant::now())).unwrap();
        assert!(tokio::time::timeout(HANG, waiter).await.unwrap().unwrap());
    }
}
