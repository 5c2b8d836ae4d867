//! Start, poll and stop against the cluster: the IO around the pure pieces ([`super::template`],
//! [`super::plan`], [`super::status`]).
//!
//! What a start created is recorded in a ConfigMap in the API's own namespace, named after a
//! hash of the client and the service id, so any replica can poll or stop it and no client can
//! reach another's record (the lookup key includes the authenticated client). The record is
//! written before the objects, listing every object the start will create, so a stop after a
//! crash still finds them all.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
    Preconditions,
};
use kube::discovery::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::auth::Client as ApiClient;
use super::config::StampAs;
use super::plan::{self, Keys, ObjectRef, PlanInput};
use super::record::{self, Entry, OnLostRecord, OnStart, Record, Seen, State};
use super::status::{Address, EventLine, Phase};
use super::template::{self, is_inert, KeywordInput};
use crate::config::Config;
use crate::core::label::is_dns_label;
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
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            file: None,
            keyword: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
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

fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 404)
}

fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 409)
}

/// Seconds since the Unix epoch: the records' clock (replicas' clocks agree well enough for
/// bounds of minutes).
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A nonce for one start: unique per start, so no other start's record can name its objects.
fn new_nonce(key: &str, start_id: &str) -> String {
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

fn busy(service_id: &str) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "busy",
        format!(
            "a start or stop of service {service_id:?} is in progress; retry when it has finished"
        ),
    )
}

fn stopped_during_start(service_id: &str) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "stopped",
        format!("service {service_id:?} was stopped while it was starting; nothing of this start is left"),
    )
}

/// The body of `POST /api/services/`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StartRequest {
    pub start_id: String,
    #[serde(default)]
    pub user_options: Map<String, Value>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
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

fn valid_service_id(id: &str) -> bool {
    // Object names are `<id>`, `<id>-env`, `<id>-tls`: a DNS label with room for a suffix.
    id.len() <= 40 && is_dns_label(id)
}

fn valid_component(s: &str) -> bool {
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
        }
    }

    pub(super) fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.kube.clone(), &self.policy.config.api.state_namespace)
    }

    fn record_name(key: &str) -> String {
        format!("portico-api-{key}")
    }

    fn abandoned_after(&self) -> u64 {
        self.policy.config.api.abandoned_after_seconds
    }

    fn parse_record(cm: &ConfigMap) -> Result<Record, Failure> {
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
        if !valid_service_id(service_id) {
            // No such name can have been started.
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

    fn record_object(&self, key: &str, record: &Record) -> Result<ConfigMap, Failure> {
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
    async fn write_record(
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
    async fn delete_record(&self, key: &str, rv: &str) -> Result<(), kube::Error> {
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

    fn user_of(&self, client: &ApiClient, user_id: &str) -> String {
        match client.config.stamp_as {
            StampAs::Unique => format!("{}_{user_id}", client.config.name),
            StampAs::User => user_id.to_string(),
        }
    }

    /// `POST /api/services/`: `(created, status)`; `created` is false for a repeated start.
    pub async fn start(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
        req: StartRequest,
    ) -> Result<(bool, ServiceStatus), Failure> {
        let api = &self.policy.config.api;
        let name = &client.config.name;
        if !valid_service_id(service_id) {
            return Err(Failure::bad(
                "uuidcode",
                format!("header uuidcode {service_id:?} must be a lowercase DNS label of at most 40 characters (letters, digits, inner '-')"),
            ));
        }
        if req.start_id.is_empty() || req.start_id.len() > 64 || !is_inert(&req.start_id) {
            return Err(Failure::bad(
                "start_id",
                "start_id must be 1-64 letters, digits or . _ - + = / @ :",
            ));
        }
        let user_id = req.env.get(&api.user_id_env).cloned().unwrap_or_default();
        if user_id.is_empty() || user_id.len() > 128 || !is_inert(&user_id) || user_id.contains('/')
        {
            return Err(Failure::bad(
                "user_id",
                format!(
                    "env.{} must name the user: 1-128 letters, digits or . _ - + = @",
                    api.user_id_env
                ),
            ));
        }
        if let Some(h) = header_user.filter(|h| *h != user_id) {
            return Err(Failure::bad(
                "user_id",
                format!(
                    "header user-id {h:?} differs from env.{} {user_id:?}",
                    api.user_id_env
                ),
            ));
        }
        let selected = req
            .user_options
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (svc, option) = selected
            .split_once('/')
            .unwrap_or((selected.as_str(), "default"));
        if !valid_component(svc) || !valid_component(option) {
            return Err(Failure::bad(
                "service",
                format!("user_options.service {selected:?} must be <service> or <service>/<option>, each letters, digits or . _ -"),
            ));
        }
        let service = format!("{svc}/{option}");
        let namespace = client
            .config
            .namespace
            .replace("{client}", name)
            .replace("{user}", &user_id);
        if !is_dns_label(&namespace) {
            return Err(Failure::bad(
                "namespace",
                format!("the namespace {namespace:?} made for this user is not a valid name"),
            ));
        }
        let portico = super::namespace::portico_namespaces(&self.policy.config);
        let portico: Vec<&str> = portico.iter().map(String::as_str).collect();
        let patterns = super::namespace::allowed_patterns(
            &client.config.namespace,
            name,
            &client.config.allowed_namespaces,
        );
        super::namespace::check(&namespace, &portico, &patterns)
            .map_err(|refusal| Failure::bad("namespace", refusal.to_string()))?;
        let user = self.user_of(client, &user_id);
        let tag =
            tag_for(&self.policy, &user, service_id).map_err(|m| Failure::bad("user_id", m))?;
        let key = service_key(name, service_id);

        // Whether this start goes ahead is settled before any template work (packing input/
        // costs CPU and memory a repeated or refused start must not spend).
        let current = self.load(name, service_id).await?;
        match record::on_start(
            current.as_ref().map(|(r, _)| r),
            &user_id,
            &req.start_id,
            now_secs(),
            self.abandoned_after(),
        ) {
            OnStart::Taken => {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    "taken",
                    format!("service {service_id:?} belongs to another user of client {name:?}"),
                ))
            }
            OnStart::Busy => return Err(busy(service_id)),
            OnStart::Repeat => {
                let Some((old, _)) = &current else {
                    return Err(busy(service_id));
                };
                // The same start again (a retried request): nothing to do.
                return Ok((false, self.status_of(old).await?));
            }
            OnStart::Create | OnStart::Replace => {}
        }

        let dir: PathBuf = Path::new(&api.descriptions)
            .join(name)
            .join(svc)
            .join(option);
        let file = dir.join("service.yaml");
        let file_name = file.display().to_string();
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::bad(
                    "unknown-service",
                    format!("client {name:?} has no service {service:?} (no {file_name})"),
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template",
                    format!("{file_name}: {e}"),
                ))
            }
        };
        // input/ is packed only for a template that places it.
        let input_placeholder = format!(
            "{}{}{}",
            api.indicators.open, api.keywords.input, api.indicators.close
        );
        let packed = if text.contains(&input_placeholder) {
            let input_dir = dir.join("input");
            tokio::task::spawn_blocking(move || super::input::pack(&input_dir))
                .await
                .map_err(|e| {
                    Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "template", e.to_string())
                })?
                .map_err(|e| {
                    Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "template", e.to_string())
                })?
        } else {
            None
        };
        let secret_name = format!("{service_id}-env");
        let cert_secret_name = format!("{service_id}-tls");
        let unique = format!("{name}_{user_id}");
        let keywords = template::keywords(&KeywordInput {
            names: &api.keywords,
            service_id,
            start_id: &req.start_id,
            user_id: &user_id,
            unique_user_id: &unique,
            client: name,
            secret_name: &secret_name,
            cert_secret_name: &cert_secret_name,
            namespace: &namespace,
            tag: &tag,
            input: packed.as_deref(),
            stage_table: api.stages.get(&api.stage),
            client_table: Some(&client.config.replacements),
            user_options: Some(&req.user_options),
        });
        let template_error = |e: template::TemplateError| Failure {
            status: if e.is_caller_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            code: "template",
            message: e.to_string(),
            file: Some(e.file().to_string()),
            keyword: e.keyword().map(str::to_string),
        };
        let parsed = template::render_objects(&text, &file_name, &api.indicators, &keywords)
            .map_err(template_error)?;
        let nonce = new_nonce(&key, &req.start_id);
        let objects = plan::plan(
            &self.keys,
            &PlanInput {
                file: &file_name,
                namespace: &namespace,
                user: &user,
                tag: &tag,
                client: name,
                service_id,
                start_id: &req.start_id,
                nonce: &nonce,
                key: &key,
                secret_name: &secret_name,
                env: &req.env,
                service_type: api.service_type,
            },
            parsed,
        )
        .map_err(|e| Failure {
            file: Some(file_name.clone()),
            ..Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "template", e.to_string())
        })?;
        let mut resources = Vec::with_capacity(objects.len());
        for object in &objects {
            let r = ObjectRef::of(object);
            let ar = self
                .resource(&r.api_version, &r.kind)
                .await
                .map_err(|m| Failure {
                    file: Some(file_name.clone()),
                    ..Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "template",
                        format!("{file_name}: {r}: {m}"),
                    )
                })?;
            resources.push(ar);
        }
        let record = Record {
            client: name.clone(),
            service_id: service_id.to_string(),
            user_id: user_id.clone(),
            user,
            namespace: namespace.clone(),
            start_id: req.start_id.clone(),
            service,
            tag,
            objects: objects
                .iter()
                .map(|o| Entry {
                    object: ObjectRef::of(o),
                    uid: None,
                })
                .collect(),
            nonce,
            route: None,
            state: State::Starting,
            start_pending: false,
            since: now_secs(),
        };
        // From here on the start runs as a task of its own: a client that disconnects, or a
        // request that hits its time limit, neither cuts it off half-way nor skips its roll-back.
        let this = self.clone();
        let work = Creation {
            key,
            record,
            objects: objects.into_iter().zip(resources).collect(),
            previous: current,
        };
        tokio::spawn(async move { this.create(work).await })
            .await
            .map_err(|e| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the start failed inside the API: {e}"),
                )
            })?
    }
}

/// What a start creates, decided before anything is written.
struct Creation {
    key: String,
    record: Record,
    objects: Vec<(Value, ApiResource)>,
    /// The record found before (a previous start this one replaces).
    previous: Option<(Record, ConfigMap)>,
}

impl Services {
    /// Takes the record, creates every object recording its uid, and marks the start done;
    /// rolls everything back on any failure, and on running out of time.
    async fn create(&self, work: Creation) -> Result<(bool, ServiceStatus), Failure> {
        let Creation {
            key,
            mut record,
            objects,
            previous,
        } = work;
        let service_id = record.service_id.clone();
        let mut rv = match previous {
            Some((old, cm)) => {
                tracing::info!(client = %old.client, service = %service_id, old = %old.start_id, new = %record.start_id, "restart: stopping the previous start");
                let old_key = service_key(&old.client, &old.service_id);
                self.delete_owned(&old, &old_key).await?;
                let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                self.write_record(&key, &record, &rv).await.map_err(|e| {
                    if conflict(&e) {
                        busy(&service_id)
                    } else {
                        Failure::cluster("updating the service record", &e)
                    }
                })?
            }
            None => {
                let cm = self.record_object(&key, &record)?;
                let created = self
                    .records()
                    .create(&PostParams::default(), &cm)
                    .await
                    .map_err(|e| {
                        if conflict(&e) {
                            busy(&service_id)
                        } else {
                            Failure::cluster("recording the service", &e)
                        }
                    })?;
                created.metadata.resource_version.unwrap_or_default()
            }
        };
        // The bound is checked between steps, never by dropping a create in flight: a create the
        // apiserver completes after its caller gave up would leave an object nobody recorded.
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.policy.config.api.start_timeout_seconds);
        let outcome = self
            .create_objects(&key, &mut record, &mut rv, objects, deadline)
            .await;
        match outcome {
            Ok(()) => {
                tracing::info!(client = %record.client, service = %service_id, start = %record.start_id, namespace = %record.namespace, objects = record.objects.len(), "service started");
                Ok((true, status_of_record(&record, Phase::Starting, "created")))
            }
            Err(Outcome::Stopped) => Err(stopped_during_start(&service_id)),
            Err(Outcome::Failed(mut failure)) => {
                let undone = self.roll_back(&key, &record, &rv).await;
                failure.message =
                    format!("{}; nothing of the start is left{undone}", failure.message);
                tracing::warn!(client = %record.client, service = %service_id, error = %failure.message, "start failed and was rolled back");
                Err(failure)
            }
        }
    }

    async fn create_objects(
        &self,
        key: &str,
        record: &mut Record,
        rv: &mut String,
        objects: Vec<(Value, ApiResource)>,
        deadline: tokio::time::Instant,
    ) -> Result<(), Outcome> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let job_label = self.policy.job_label().to_string();
        for (i, (object, ar)) in objects.into_iter().enumerate() {
            let r = ObjectRef::of(&object);
            if tokio::time::Instant::now() > deadline {
                return Err(Failure::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "the cluster did not create the objects within api.startTimeoutSeconds ({} s); {r} was not created",
                        self.policy.config.api.start_timeout_seconds
                    ),
                )
                .into());
            }
            let obj = serde_json::from_value::<DynamicObject>(object).map_err(|e| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template",
                    format!("{r}: {e}"),
                )
            })?;
            let created = self
                .dynamic(&record.namespace, &ar)
                .create(&params, &obj)
                .await
                .map_err(|e| Failure::cluster(&format!("creating {r}"), &e))?;
            let uid = created.metadata.uid.clone().unwrap_or_default();
            if let Some(entry) = record.objects.get_mut(i) {
                entry.uid = Some(uid.clone());
            }
            if record.route.is_none() {
                let value = serde_json::to_value(&created).unwrap_or(Value::Null);
                record.route = plan::pod_label(&value, &job_label);
            }
            self.record_step(key, record, rv, Some((&r, &ar, &uid)))
                .await?;
        }
        record.state = State::Started;
        self.record_step(key, record, rv, None).await
    }

    /// Writes the record after a step. When the write is refused because a stop took the record
    /// over, removes the object just created (`uid`, empty for none) and tells the stop so.
    async fn record_step(
        &self,
        key: &str,
        record: &Record,
        rv: &mut String,
        just_created: Option<(&ObjectRef, &ApiResource, &str)>,
    ) -> Result<(), Outcome> {
        for _ in 0..5 {
            match self.write_record(key, record, rv).await {
                Ok(next) => {
                    *rv = next;
                    return Ok(());
                }
                Err(e) if conflict(&e) || not_found(&e) => {}
                Err(e) => return Err(Failure::cluster("updating the service record", &e).into()),
            }
            let now = self.load(&record.client, &record.service_id).await?;
            let decision = record::on_lost_record(now.as_ref().map(|(r, _)| r), &record.nonce);
            match decision {
                OnLostRecord::Retry => {
                    if let Some((_, cm)) = &now {
                        *rv = cm.metadata.resource_version.clone().unwrap_or_default();
                    }
                    continue;
                }
                OnLostRecord::Gone | OnLostRecord::StoppedByStop => {
                    if let Some((r, ar, uid)) = just_created {
                        self.delete_by_uid(&record.namespace, ar, &r.name, uid)
                            .await
                            .map_err(Outcome::Failed)?;
                    }
                    if decision == OnLostRecord::StoppedByStop {
                        self.clear_pending(key, &record.client, &record.service_id)
                            .await;
                    }
                    tracing::info!(client = %record.client, service = %record.service_id, "a stop took over the start; its last object is removed");
                    return Err(Outcome::Stopped);
                }
            }
        }
        Err(Failure::new(
            StatusCode::CONFLICT,
            "busy",
            "the service record kept changing under this start",
        )
        .into())
    }

    /// Tells the stop that interrupted a start that the start has removed its last object.
    async fn clear_pending(&self, key: &str, client: &str, service_id: &str) {
        for _ in 0..5 {
            let Ok(Some((mut r, cm))) = self.load(client, service_id).await else {
                return;
            };
            if !r.start_pending {
                return;
            }
            r.start_pending = false;
            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
            match self.write_record(key, &r, &rv).await {
                Ok(_) => return,
                Err(e) if conflict(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell the stop the start is done; it waits out its bound");
                    return;
                }
            }
        }
    }

    /// Removes what a failed start created, newest first, then its record. Returns a note for
    /// the response when something could not be removed.
    async fn roll_back(&self, key: &str, record: &Record, rv: &str) -> String {
        let mut left = Vec::new();
        if let Err(f) = self.delete_owned(record, key).await {
            left.push(f.message);
        }
        if let Err(e) = self.delete_record(key, rv).await {
            if !conflict(&e) {
                left.push(format!("the record ({})", kube_message(&e)));
            }
        }
        if left.is_empty() {
            String::new()
        } else {
            format!(" except: {} (a DELETE retries)", left.join(", "))
        }
    }

    async fn delete_by_uid(
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
    pub(super) async fn find_owned(
        &self,
        record: &Record,
        key: &str,
        entry: &Entry,
    ) -> Result<Option<(DynamicObject, ApiResource)>, Failure> {
        let r = &entry.object;
        let ar = self.resource(&r.api_version, &r.kind).await.map_err(|m| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "cluster",
                format!("reading {r}: {m}"),
            )
        })?;
        let found = self
            .dynamic(&record.namespace, &ar)
            .get_opt(&r.name)
            .await
            .map_err(|e| Failure::cluster(&format!("reading {r}"), &e))?;
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
    async fn delete_owned(&self, record: &Record, key: &str) -> Result<(), Failure> {
        for entry in record.objects.iter().rev() {
            let Some((found, ar)) = self.find_owned(record, key, entry).await? else {
                continue;
            };
            let uid = found.metadata.uid.clone().unwrap_or_default();
            self.delete_by_uid(&record.namespace, &ar, &entry.object.name, &uid)
                .await?;
        }
        Ok(())
    }

    fn check_user(record: &Record, header_user: Option<&str>) -> bool {
        header_user.is_none_or(|u| u == record.user_id)
    }

    /// `GET /api/services/<name>/`; `None` when this client (and user) has no such service.
    pub async fn status(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
        match self.load(&client.config.name, service_id).await? {
            Some((record, _)) if Self::check_user(&record, header_user) => {
                let now = now_secs();
                let abandoned = record::is_abandoned(&record, now, self.abandoned_after());
                let status = match record.state {
                    State::Starting if abandoned => status_of_record(
                        &record,
                        Phase::Failed,
                        "the start was cut off; a stop (or the API's collection of abandoned starts) removes it",
                    ),
                    State::Starting => status_of_record(
                        &record,
                        Phase::Starting,
                        "the API is creating the objects",
                    ),
                    State::Stopping => status_of_record(&record, Phase::Stopped, "being stopped"),
                    State::Started => self.status_of(&record).await?,
                };
                Ok(Some(status))
            }
            _ => Ok(None),
        }
    }

    /// `DELETE /api/services/<name>/`; `None` when this client (and user) has no such service.
    /// Runs as a task of its own, so a client that leaves does not cut it off.
    pub async fn stop(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
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
        let (mut record, mut rv) = loop {
            let Some((record, cm)) = self.load(client, service_id).await? else {
                return Ok(None);
            };
            if !Self::check_user(&record, header_user) {
                return Ok(None);
            }
            let now = now_secs();
            let mut next = record.clone();
            next.start_pending = record.state == State::Starting
                && !record::is_abandoned(&record, now, self.abandoned_after());
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
        match self.delete_record(&key, &rv).await {
            Ok(()) => {}
            Err(e) if conflict(&e) => {
                // Someone wrote it since: delete whatever version it is now, it is ours to end.
                match self
                    .records()
                    .delete(&Self::record_name(&key), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(Failure::cluster("removing the service record", &e)),
                }
            }
            Err(e) => return Err(Failure::cluster("removing the service record", &e)),
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

/// How creating the objects ended, when it did not complete.
enum Outcome {
    /// A stop took the record over; this start removed its last object.
    Stopped,
    /// Roll back and answer this.
    Failed(Failure),
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Self {
        Outcome::Failed(f)
    }
}
