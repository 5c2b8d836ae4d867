//! How a started service is doing: the IO around [`super::status`]. Only what the service's own
//! start created counts: the objects whose uid its record holds, and the pods carrying the
//! route value Portico's webhook stamped for the service's user and tag — a value nobody else
//! can put on a pod (the webhook overwrites a forged one) — so a co-tenant's decoy pod changes
//! neither the phase nor the events and logs reported.
//!
//! A failed service's events and logs are read within bounds: events page by page up to a cap,
//! logs of at most a few pods, each up to a byte cap.

use std::collections::BTreeSet;

use futures::AsyncReadExt as _;
use http::StatusCode;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, LogParams};

use super::cluster::{service_key, Failure, ServiceStatus, Services};
use super::record::Record;
use super::status::{self, Phase};
use crate::api::Exposure;
use crate::core::route::route_value;

/// Events listed per page, and pages read per object, when a failed service is reported.
const EVENT_PAGE: u32 = 100;
const EVENT_PAGES: usize = 5;
/// Pods whose logs a failed-status poll reads.
const LOG_PODS: usize = 4;

impl Services {
    /// The route value the service's pods carry: as stamped on the created objects, else as
    /// Portico computes it for the record's user and tag.
    fn route_of(&self, record: &Record) -> Option<String> {
        if let Some(route) = &record.route {
            return Some(route.clone());
        }
        let prefix = self.policy.prefix_for(&record.user).ok()?;
        route_value(&record.user, &prefix, &record.tag)
            .ok()
            .map(|r| r.to_string())
    }

    pub(super) async fn status_of(&self, record: &Record) -> Result<ServiceStatus, Failure> {
        let ns = &record.namespace;
        let key = service_key(&record.client, &record.service_id);
        let mut pods = Vec::new();
        if let Some(route) = self.route_of(record) {
            let api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
            let selector = format!(
                "{}={key},{}={route}",
                self.keys.service,
                self.policy.job_label()
            );
            let listed = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Failure::cluster("listing the service's pods", &e))?
                .items;
            pods = status::focus_on_main(
                status::this_starts_pods(listed, &self.keys.nonce, &record.nonce),
                &self.policy.config.api.container_main_name,
            );
        }
        let mut exposure = None;
        let mut missing = Vec::new();
        let mut uids: BTreeSet<String> = BTreeSet::new();
        for entry in &record.objects {
            let r = &entry.object;
            if r.kind == "Secret" && r.api_version == "v1" {
                continue;
            }
            match self.find_owned(record, &key, entry, false).await? {
                None => missing.push(r.to_string()),
                Some((found, _)) => {
                    uids.extend(found.metadata.uid.clone());
                    if r.is_exposure() {
                        let value = serde_json::to_value(&found).unwrap_or_default();
                        exposure = serde_json::from_value::<Exposure>(value).ok();
                    }
                }
            }
        }
        let has_exposure = record.objects.iter().any(|e| e.object.is_exposure());
        let assessment = if has_exposure {
            status::assess(&pods, exposure.as_ref(), &missing)
        } else {
            status::assess_own_service(&pods, &missing)
        };
        let mut out =
            super::cluster::status_of_record(record, assessment.phase, assessment.reason.clone());
        out.address = assessment.address.clone();
        if let Some(address) = out.address.as_mut() {
            if !address.node_ports.is_empty() {
                address.node_host = self.node_host(&pods).await;
            }
        }
        out.retrying = assessment.retrying;
        if assessment.phase == Phase::Failed {
            let api = &self.policy.config.api;
            let failed: Vec<&Pod> = pods
                .iter()
                .filter(|p| {
                    assessment.failed_pods.is_empty()
                        || p.metadata
                            .name
                            .as_ref()
                            .is_some_and(|n| assessment.failed_pods.contains(n))
                })
                .take(LOG_PODS)
                .collect();
            if api.events > 0 {
                uids.extend(failed.iter().filter_map(|p| p.metadata.uid.clone()));
                out.events = self.events(ns, &uids, api.events).await;
            }
            if api.log_lines > 0 {
                out.logs = self.logs(ns, &failed, api.log_lines, api.log_bytes).await;
            }
        }
        Ok(out)
    }

    /// Where the node ports are reached: `api.nodePortHost`, else the external address of the
    /// node a ready pod runs on. A node that cannot be read gives none (logged): the address is
    /// a convenience, never a reason to fail a poll.
    async fn node_host(&self, pods: &[Pod]) -> Option<String> {
        let configured = &self.policy.config.api.node_port_host;
        if !configured.is_empty() {
            return Some(configured.clone());
        }
        let name = status::node_of(pods)?;
        let nodes: Api<Node> = Api::all(self.kube.clone());
        match nodes.get_opt(&name).await {
            Ok(node) => node.as_ref().and_then(status::node_address),
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "cannot read the node for its address");
                None
            }
        }
    }

    /// The last `n` events about the objects with these uids, read page by page up to a cap.
    async fn events(&self, ns: &str, uids: &BTreeSet<String>, n: usize) -> Vec<status::EventLine> {
        let api: Api<Event> = Api::namespaced(self.kube.clone(), ns);
        let mut events = Vec::new();
        for uid in uids {
            let mut params = ListParams::default()
                .fields(&format!("involvedObject.uid={uid}"))
                .limit(EVENT_PAGE);
            for _ in 0..EVENT_PAGES {
                match api.list(&params).await {
                    Ok(list) => {
                        events.extend(list.items);
                        match list.metadata.continue_.filter(|c| !c.is_empty()) {
                            Some(token) => params = params.continue_token(&token),
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list events for a failed service");
                        break;
                    }
                }
            }
        }
        status::recent_events(&events, uids, n)
    }

    /// The last `lines` log lines of these pods, each container's log read up to `bytes`.
    async fn logs(&self, ns: &str, pods: &[&Pod], lines: usize, bytes: usize) -> Vec<String> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let mut logs = Vec::new();
        for pod in pods {
            let Some(name) = pod.metadata.name.as_deref() else {
                continue;
            };
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            for c in containers {
                let params = LogParams {
                    container: Some(c.name.clone()),
                    tail_lines: Some(lines as i64),
                    limit_bytes: Some(bytes as i64),
                    ..LogParams::default()
                };
                match self.read_log(&api, name, &params, bytes).await {
                    Ok(text) => logs.push((format!("{name}/{}", c.name), text)),
                    Err(e) => {
                        tracing::debug!(pod = name, error = %e.message, "cannot read container log")
                    }
                }
            }
        }
        status::last_lines(&logs, lines)
    }

    /// A log, never more than `bytes` of it whatever the server sends; a log cut short says so
    /// in a last line.
    async fn read_log(
        &self,
        api: &Api<Pod>,
        name: &str,
        params: &LogParams,
        bytes: usize,
    ) -> Result<String, Failure> {
        let stream = api
            .log_stream(name, params)
            .await
            .map_err(|e| Failure::cluster("reading a log", &e))?;
        let mut buf = Vec::new();
        stream
            .take(bytes as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "cluster",
                    format!("reading a log: {e}"),
                )
            })?;
        let cut = buf.len() > bytes;
        buf.truncate(bytes);
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if cut {
            text.push_str(&format!(
                "\n… the log was cut at {bytes} bytes (api.logBytes)"
            ));
        }
        Ok(text)
    }
}
