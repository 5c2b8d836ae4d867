//! What starts ([`super::start`]), polls ([`super::poll`]) and stops ([`super::stop`]) share:
//! the request and answer types, the service's record in the cluster, kind discovery, and which
//! objects are the service's.
//!
//! What a start creates is recorded in a ConfigMap in the API's own namespace, named after a
//! hash of the client and the service id, so any replica can poll or stop it and no client can
//! reach another's record (the lookup key includes the authenticated client). The record is
//! written before the objects, listing every object the start will create, and each object's
//! uid is added as it is created ([`super::record`] decides what is the service's), so a stop
//! after a crash still finds them all and a record never reaches another tenant's objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::StatusCode;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams, Preconditions,
};
use kube::discovery::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::auth::Client as ApiClient;
use super::config::{StampAs, Wire};
use super::limits::StartLimits;
use super::plan::Keys;
use super::record::{self, Entry, Record, Seen, State};
use super::status::{Address, EventLine, Phase};
use crate::config::Config;
use crate::core::route::route_value;
use crate::core::Policy;

/// The field manager of everything the API creates.
pub const FIELD_MANAGER: &str = "portico-api";

/// A request that could not be served: the HTTP status and a JSON-ready explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    pub keyword: Option<String>,
    /// Seconds after which the same request may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            file: None,
            keyword: None,
            retry_after: None,
        }
    }

    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }

    pub(super) fn cluster(what: &str, error: &kube::Error) -> Self {
        let status = match error {
            kube::Error::Api(e) if e.code == 409 => StatusCode::CONFLICT,
            kube::Error::Api(e) if (400..500).contains(&e.code) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(
            status,
            "cluster",
            format!("{what}: {}", kube_message(error)),
        )
    }
}

pub(super) fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

pub(super) fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 404)
}

pub(super) fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 409)
}

/// Seconds since the Unix epoch: the records' clock (replicas' clocks agree well enough for
/// bounds of minutes).
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A nonce for one start: unique per start, so no other start's record can name its objects.
pub(super) fn new_nonce(key: &str, start_id: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let digest =
        Sha256::digest(format!("{key}/{start_id}/{nanos}/{n}/{}", std::process::id()).as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn busy(service_id: &str) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "busy",
        format!(
            "a start or stop of service {service_id:?} is in progress; retry when it has finished"
        ),
    )
}

/// The body of `POST /api/services/`. Keys it does not name (a hub's `auth_state`, say) are
/// ignored: never stored, logged or passed to the service.
#[derive(Clone, Default, Deserialize)]
pub struct StartRequest {
    #[serde(deserialize_with = "super::body::start_id")]
    pub start_id: String,
    #[serde(default)]
    pub user_options: Map<String, Value>,
    /// Every entry goes into the service's env Secret. Numbers and booleans (the hub sends
    /// `JUPYTERHUB_USER_ID` as a number) are kept as their JSON text.
    #[serde(default, deserialize_with = "super::body::env")]
    pub env: BTreeMap<String, String>,
    /// The hub's certificates for the lab's internal TLS: present, empty or absent.
    #[serde(default, deserialize_with = "super::body::certs")]
    pub certs: Option<super::body::Certs>,
}

impl std::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the env's or certificates' values: they hold the hub's tokens and keys.
        f.debug_struct("StartRequest")
            .field("start_id", &self.start_id)
            .field("user_options", &self.user_options)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("certs", &self.certs.is_some())
            .finish()
    }
}

/// What a poll (or a start, or a stop) answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub status: Phase,
    pub reason: String,
    pub start_id: String,
    pub user_id: String,
    pub service: String,
    pub namespace: String,
    pub tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// A failure the cluster retries by itself (a first failed image pull): Portico reports it,
    /// but the manager's clients must not stop the lab for it (see [`super::k8smgr::running`]).
    #[serde(skip)]
    pub retrying: bool,
}

pub(super) fn status_of_record(
    r: &Record,
    phase: Phase,
    reason: impl Into<String>,
) -> ServiceStatus {
    ServiceStatus {
        name: r.service_id.clone(),
        status: phase,
        reason: reason.into(),
        start_id: r.start_id.clone(),
        user_id: r.user_id.clone(),
        service: r.service.clone(),
        namespace: r.namespace.clone(),
        tag: r.tag.clone(),
        address: None,
        events: Vec::new(),
        logs: Vec::new(),
        retrying: false,
    }
}

/// The service operations, shared by every request.
/// Cheap to clone: a start or stop runs on as a task of its own after its client has gone.
#[derive(Clone)]
pub struct Services {
    pub(super) kube: kube::Client,
    /// Holds the configuration too (`policy.config`).
    pub(super) policy: Arc<Policy>,
    pub(super) keys: Arc<Keys>,
    kinds: Arc<Mutex<HashMap<(String, String), ApiResource>>>,
    /// Each client's starts in flight and per minute (on this replica).
    pub(super) limits: StartLimits,
}

/// The label value naming one client's service: a hash, so that it is label-safe and the same
/// service id of two clients never meets.
pub fn service_key(client: &str, service_id: &str) -> String {
    let digest = Sha256::digest(format!("{client}/{service_id}").as_bytes());
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// The ipaddr tag of a service: its id when that fits the user's route value, else a hash.
pub fn tag_for(policy: &Policy, user: &str, service_id: &str) -> Result<String, String> {
    let prefix = policy
        .prefix_for(user)
        .map_err(|e| format!("user {user:?} cannot be given a routing prefix: {e}"))?;
    if route_value(user, &prefix, service_id).is_ok() {
        return Ok(service_id.to_string());
    }
    let digest = Sha256::digest(service_id.as_bytes());
    let tag: String = std::iter::once("s".to_string())
        .chain(digest.iter().take(6).map(|b| format!("{b:02x}")))
        .collect();
    route_value(user, &prefix, &tag)
        .map(|_| tag)
        .map_err(|e| e.to_string())
}

/// A tag the portal's user chose (JARVICE's "IP Address Tag"): kept exactly as chosen (tags are
/// case sensitive) when it makes a valid route value under the user's own prefix, so an
/// administrator's persistent Service selecting `<prefix>-<tag>` finds the service. The prefix
/// is the user's, so no choice reaches another user's route values.
pub fn chosen_tag(policy: &Policy, user: &str, tag: &str) -> Result<String, String> {
    let prefix = policy
        .prefix_for(user)
        .map_err(|e| format!("user {user:?} cannot be given a routing prefix: {e}"))?;
    route_value(user, &prefix, tag)
        .map(|_| tag.to_string())
        .map_err(|e| format!("the ipaddr tag {tag:?} cannot be used: {e}"))
}

pub(super) fn valid_service_id(id: &str) -> bool {
    // Object names are `<id>`, `<id>-env`, `<id>-tls`: a DNS label with room for a suffix. The
    // Exposure `<id>` names its Service, and a Service name must start with a letter (DNS-1035):
    // a start under `1lab` could never become ready.
    super::names::is_plain(id) && crate::core::label::dns1035_label_problem(id).is_none()
}

/// Whether this client can have started a service of this name at all: a name its wire refuses
/// on a start is answered "not found" without asking the cluster.
pub(super) fn addressable(client: &ApiClient, service_id: &str) -> bool {
    match client.config.wire {
        Wire::Portico => valid_service_id(service_id),
        Wire::K8smgr => super::names::object_id(service_id).is_ok(),
    }
}

pub(super) fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Services {
    pub fn new(kube: kube::Client, config: Arc<Config>) -> Self {
        Self {
            kube,
            policy: Arc::new(Policy::new((*config).clone())),
            keys: Arc::new(Keys::new(&config)),
            kinds: Arc::new(Mutex::new(HashMap::new())),
            limits: StartLimits::new(
                config.api.max_starts_in_flight,
                config.api.starts_per_minute,
            ),
        }
    }

    pub(super) fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.kube.clone(), &self.policy.config.api.state_namespace)
    }

    pub(super) fn record_name(key: &str) -> String {
        format!("portico-api-{key}")
    }

    pub(super) fn abandoned_after(&self) -> u64 {
        self.policy.config.api.abandoned_after_seconds
    }

    pub(super) fn parse_record(cm: &ConfigMap) -> Result<Record, Failure> {
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("record"))
            .cloned()
            .unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "record",
                format!(
                    "the record ConfigMap {} is damaged: {e}",
                    cm.metadata.name.as_deref().unwrap_or("")
                ),
            )
        })
    }

    pub(super) async fn load(
        &self,
        client: &str,
        service_id: &str,
    ) -> Result<Option<(Record, ConfigMap)>, Failure> {
        if !valid_service_id(service_id) && super::names::object_id(service_id).is_err() {
            // No such name can have been started, by any client.
            return Ok(None);
        }
        let name = Self::record_name(&service_key(client, service_id));
        let cm = self
            .records()
            .get_opt(&name)
            .await
            .map_err(|e| Failure::cluster("reading the service record", &e))?;
        let Some(cm) = cm else { return Ok(None) };
        let record = Self::parse_record(&cm)?;
        // The key includes the client; this only guards against a hash collision or a hand edit.
        if record.client != client || record.service_id != service_id {
            return Ok(None);
        }
        Ok(Some((record, cm)))
    }

    pub(super) fn record_object(&self, key: &str, record: &Record) -> Result<ConfigMap, Failure> {
        let text = serde_json::to_string(record).map_err(|e| {
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "record", e.to_string())
        })?;
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(Self::record_name(key));
        cm.metadata.namespace = Some(self.policy.config.api.state_namespace.clone());
        cm.metadata.labels = Some(
            [
                (self.keys.service.clone(), key.to_string()),
                (self.keys.client.clone(), record.client.clone()),
            ]
            .into(),
        );
        cm.data = Some([("record".to_string(), text)].into());
        Ok(cm)
    }

    /// Writes the record over the version `rv` (the apiserver refuses it with 409 when anyone
    /// wrote it since); returns the new version.
    pub(super) async fn write_record(
        &self,
        key: &str,
        record: &Record,
        rv: &str,
    ) -> Result<String, kube::Error> {
        let mut cm = self
            .record_object(key, record)
            .map_err(|f| kube::Error::Service(f.message.into()))?;
        cm.metadata.resource_version = Some(rv.to_string());
        let written = self
            .records()
            .replace(&Self::record_name(key), &PostParams::default(), &cm)
            .await?;
        Ok(written.metadata.resource_version.unwrap_or_default())
    }

    /// Deletes the record at version `rv` (a newer one belongs to someone else's step).
    pub(super) async fn delete_record(&self, key: &str, rv: &str) -> Result<(), kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .records()
            .delete(&Self::record_name(key), &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Looks up (and caches) how to reach a kind; fails for kinds the cluster does not serve
    /// and for cluster-scoped ones (a user's service lives in one namespace).
    pub(super) async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, String> {
        let cache_key = (api_version.to_string(), kind.to_string());
        if let Some(ar) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.kube, &gvk)
            .await
            .map_err(|e| {
                format!(
                    "the cluster does not serve {api_version} {kind}: {}",
                    kube_message(&e)
                )
            })?;
        if caps.scope != Scope::Namespaced {
            return Err(format!("{api_version} {kind} is cluster-scoped; a service may only create namespaced objects"));
        }
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, ar.clone());
        Ok(ar)
    }

    pub(super) fn dynamic(&self, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.kube.clone(), ns, ar)
    }

    pub(super) fn user_of(&self, client: &ApiClient, user_id: &str) -> String {
        match client.config.stamp_as {
            StampAs::Unique => format!("{}_{user_id}", client.config.name),
            StampAs::User => user_id.to_string(),
        }
    }

    pub(super) async fn delete_by_uid(
        &self,
        ns: &str,
        ar: &ApiResource,
        name: &str,
        uid: &str,
    ) -> Result<(), Failure> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.dynamic(ns, ar).delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or a different object of that name now: not this service's to delete.
            Err(e) if not_found(&e) || conflict(&e) => Ok(()),
            Err(e) => Err(Failure::cluster(&format!("deleting {}", name), &e)),
        }
    }

    /// What the cluster holds under `entry`'s name, and whether it is the record's.
    /// `unreadable_is_absent`: for a deletion, an object the API may not read is not shown to be
    /// the service's and is left alone; for a poll it is an error worth reporting.
    pub(super) async fn find_owned(
        &self,
        record: &Record,
        key: &str,
        entry: &Entry,
        unreadable_is_absent: bool,
    ) -> Result<Option<(DynamicObject, ApiResource)>, Failure> {
        let r = &entry.object;
        let ar = self.resource(&r.api_version, &r.kind).await.map_err(|m| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "cluster",
                format!("reading {r}: {m}"),
            )
        })?;
        let found = match self.dynamic(&record.namespace, &ar).get_opt(&r.name).await {
            Ok(found) => found,
            // The shipped RBAC never lets the API read a Secret back: an object it may not read
            // cannot be shown to be the service's, so it is left alone.
            Err(kube::Error::Api(e)) if e.code == 403 && unreadable_is_absent => {
                tracing::warn!(object = %r, namespace = %record.namespace, "cannot read it to check that it is the service's; left alone");
                None
            }
            Err(e) => return Err(Failure::cluster(&format!("reading {r}"), &e)),
        };
        let Some(found) = found else { return Ok(None) };
        let meta = &found.metadata;
        let seen = Seen {
            uid: meta.uid.clone().unwrap_or_default(),
            nonce: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(&self.keys.nonce))
                .cloned(),
            service_label: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(&self.keys.service))
                .cloned(),
        };
        Ok(record::owns(record, key, entry, &seen).then_some((found, ar)))
    }

    /// Deletes, newest first, every object of the record that carries its identity; objects of
    /// the same name that do not are someone else's and are left alone.
    pub(super) async fn delete_owned(&self, record: &Record, key: &str) -> Result<(), Failure> {
        for entry in record.objects.iter().rev() {
            let r = &entry.object;
            if let Some(uid) = &entry.uid {
                // Recorded: deleted by its uid without reading it (a Secret is never read back).
                let ar = self.resource(&r.api_version, &r.kind).await.map_err(|m| {
                    Failure::new(
                        StatusCode::BAD_GATEWAY,
                        "cluster",
                        format!("deleting {r}: {m}"),
                    )
                })?;
                self.delete_by_uid(&record.namespace, &ar, &r.name, uid)
                    .await?;
                continue;
            }
            let Some((found, ar)) = self.find_owned(record, key, entry, true).await? else {
                continue;
            };
            let uid = found.metadata.uid.clone().unwrap_or_default();
            self.delete_by_uid(&record.namespace, &ar, &r.name, &uid)
                .await?;
        }
        Ok(())
    }

    pub(super) fn check_user(record: &Record, header_user: Option<&str>) -> bool {
        header_user.is_none_or(|u| u == record.user_id)
    }

    /// `GET /api/services/<name>/`; `None` when this client (and user) has no such service.
    pub async fn status(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
        if !addressable(client, service_id) {
            return Ok(None);
        }
        match self.load(&client.config.name, service_id).await? {
            Some((record, _)) if Self::check_user(&record, header_user) => {
                Ok(Some(self.status_for(&record).await?))
            }
            _ => Ok(None),
        }
    }

    /// The status of a service as its record's state has it: a start in progress or a stop is
    /// answered from the record; a started service from the cluster.
    pub(super) async fn status_for(&self, record: &Record) -> Result<ServiceStatus, Failure> {
        let abandoned = record::is_abandoned(record, now_secs(), self.abandoned_after());
        Ok(match record.state {
            State::Starting if abandoned => status_of_record(
                record,
                Phase::Failed,
                "the start was cut off; a stop (or the API's collection of abandoned starts) removes it",
            ),
            State::Starting => {
                status_of_record(record, Phase::Starting, "the API is creating the objects")
            }
            State::Stopping => status_of_record(record, Phase::Stopped, "being stopped"),
            State::Started => self.status_of(record).await?,
        })
    }
}
