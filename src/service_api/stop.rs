//! A stop, and the collection of abandoned starts. A stop first takes the service's record
//! over (state `stopping`, a resourceVersion-checked write), so no start can record another
//! object; deletes every object that carries the service's identity; waits, bounded, for a start
//! it interrupted to remove the object it was creating; deletes again and removes the record.
//! It runs as a task of its own, so a client that leaves does not cut it off.

use std::time::Duration;

use http::StatusCode;
use kube::api::ListParams;

use super::auth::Client as ApiClient;
use super::cluster::{
    conflict, not_found, now_secs, service_key, status_of_record, Failure, ServiceStatus, Services,
};
use super::record::{self, State};
use super::status::Phase;

impl Services {
    /// `DELETE /api/services/<name>/`; `None` when this client (and user) has no such service.
    /// Runs as a task of its own, so a client that leaves does not cut it off.
    pub async fn stop(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
        if !super::cluster::addressable(client, service_id) {
            return Ok(None);
        }
        let this = self.clone();
        let client = client.config.name.clone();
        let service_id = service_id.to_string();
        let header_user = header_user.map(str::to_string);
        tokio::spawn(async move {
            this.stop_inner(&client, &service_id, header_user.as_deref())
                .await
        })
        .await
        .map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the stop failed inside the API: {e}"),
            )
        })?
    }

    async fn stop_inner(
        &self,
        client: &str,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
        let key = service_key(client, service_id);
        // Take the record over: from this write on, no start can record another object.
        let mut attempts = 0;
        let (mut record, mut rv) = loop {
            attempts += 1;
            if attempts > 20 {
                return Err(super::cluster::busy(service_id));
            }
            let Some((record, cm)) = self.load(client, service_id).await? else {
                return Ok(None);
            };
            if !Self::check_user(&record, header_user) {
                return Ok(None);
            }
            let now = now_secs();
            let mut next = record.clone();
            // A start interrupted by an earlier stop still owes its last object.
            // (Unless the record has sat for longer than any live start takes: it is dead.)
            let live = !record::is_abandoned(&record, now, self.abandoned_after());
            next.start_pending = live && (record.start_pending || record.state == State::Starting);
            next.state = State::Stopping;
            next.since = now;
            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
            match self.write_record(&key, &next, &rv).await {
                Ok(rv) => break (next, rv),
                Err(e) if conflict(&e) => continue,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(Failure::cluster("updating the service record", &e)),
            }
        };
        self.delete_owned(&record, &key).await?;
        // A start that was creating an object when the record was taken over removes it itself
        // and says so; wait for that (bounded: its replica may be gone), then look again.
        let started = tokio::time::Instant::now();
        let bound = self.policy.config.api.start_timeout_seconds + 5;
        while record.start_pending {
            if record::stop_may_finish(&record, started.elapsed().as_secs(), bound) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.load(client, service_id).await? {
                Some((r, cm)) => {
                    record = r;
                    rv = cm.metadata.resource_version.clone().unwrap_or_default();
                }
                None => break,
            }
        }
        self.delete_owned(&record, &key).await?;
        // The record may have moved on (the interrupted start cleared its flag, another stop of
        // the same start): delete it while it is still this start's, never a newer start's.
        for _ in 0..5 {
            match self.delete_record(&key, &rv).await {
                Ok(()) => break,
                Err(e) if conflict(&e) => match self.load(client, service_id).await? {
                    Some((now, cm)) if record::same_start(&record, &now) => {
                        rv = cm.metadata.resource_version.clone().unwrap_or_default();
                    }
                    _ => break,
                },
                Err(e) => return Err(Failure::cluster("removing the service record", &e)),
            }
        }
        tracing::info!(client = %record.client, service = service_id, "service stopped");
        Ok(Some(status_of_record(
            &record,
            Phase::Stopped,
            "stopped and removed",
        )))
    }

    /// Removes the records (and what they own) of starts and stops abandoned by a replica that
    /// went away mid-way. Every replica runs it; the record's versions keep them from colliding.
    pub async fn collect_abandoned(&self) -> Result<usize, Failure> {
        let list = self
            .records()
            .list(&ListParams::default().labels(&self.keys.client))
            .await
            .map_err(|e| Failure::cluster("listing the service records", &e))?;
        let now = now_secs();
        let mut collected = 0;
        for cm in &list.items {
            let Ok(record) = Self::parse_record(cm) else {
                continue;
            };
            if !record::is_abandoned(&record, now, self.abandoned_after()) {
                continue;
            }
            let key = service_key(&record.client, &record.service_id);
            if Self::record_name(&key) != cm.metadata.name.as_deref().unwrap_or("") {
                continue;
            }
            self.delete_owned(&record, &key).await?;
            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
            match self.delete_record(&key, &rv).await {
                Ok(()) => {
                    collected += 1;
                    tracing::info!(client = %record.client, service = %record.service_id, "collected an abandoned start");
                }
                Err(e) if conflict(&e) => {}
                Err(e) => return Err(Failure::cluster("removing an abandoned record", &e)),
            }
        }
        Ok(collected)
    }
}
