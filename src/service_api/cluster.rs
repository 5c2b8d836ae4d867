//! Start, poll and stop against the cluster: the IO around the pure pieces ([`super::template`],
//! [`super::plan`], [`super::status`]).
//!
//! What a start created is recorded in a ConfigMap in the API's own namespace, named after a
//! hash of the client and the service id, so any replica can poll or stop it and no client can
//! reach another's record (the lookup key includes the authenticated client). The record is
//! written before the objects, listing every object the start will create, so a stop after a
//! crash still finds them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams,
    PostParams,
};
use kube::discovery::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::auth::Client as ApiClient;
use super::config::StampAs;
use super::plan::{self, Keys, ObjectRef, PlanInput};
use super::status::{self, Address, EventLine, Phase};
use super::template::{self, is_inert, KeywordInput};
use crate::api::Exposure;
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

    fn cluster(what: &str, error: &kube::Error) -> Self {
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

/// One started service, as kept in its ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    client: String,
    service_id: String,
    user_id: String,
    user: String,
    namespace: String,
    start_id: String,
    service: String,
    tag: String,
    objects: Vec<ObjectRef>,
}

impl Record {
    fn status(&self, phase: Phase, reason: impl Into<String>) -> ServiceStatus {
        ServiceStatus {
            name: self.service_id.clone(),
            status: phase,
            reason: reason.into(),
            start_id: self.start_id.clone(),
            user_id: self.user_id.clone(),
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            tag: self.tag.clone(),
            address: None,
            events: Vec::new(),
            logs: Vec::new(),
        }
    }
}

/// The service operations, shared by every request.
pub struct Services {
    kube: kube::Client,
    /// Holds the configuration too (`policy.config`).
    policy: Policy,
    keys: Keys,
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
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
            policy: Policy::new((*config).clone()),
            keys: Keys::new(&config),
            kinds: Mutex::new(HashMap::new()),
        }
    }

    fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.kube.clone(), &self.policy.config.api.state_namespace)
    }

    fn record_name(key: &str) -> String {
        format!("portico-api-{key}")
    }

    async fn load(
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
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("record"))
            .cloned()
            .unwrap_or_default();
        let record: Record = serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "record",
                format!("the record ConfigMap {name} is damaged: {e}"),
            )
        })?;
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

    /// Looks up (and caches) how to reach a kind; fails for kinds the cluster does not serve
    /// and for cluster-scoped ones (a user's service lives in one namespace).
    async fn resource(&self, api_version: &str, kind: &str) -> Result<ApiResource, String> {
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

    fn dynamic(&self, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
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
        let user = self.user_of(client, &user_id);
        let tag =
            tag_for(&self.policy, &user, service_id).map_err(|m| Failure::bad("user_id", m))?;
        let key = service_key(name, service_id);

        // Everything that can be decided without the cluster is decided before touching it.
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
        let input_dir = dir.join("input");
        let packed = tokio::task::spawn_blocking(move || super::input::pack(&input_dir))
            .await
            .map_err(|e| {
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "template", e.to_string())
            })?
            .map_err(|e| {
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "template", e.to_string())
            })?;
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
        let rendered = template::render(&text, &file_name, &api.indicators, &keywords)
            .map_err(template_error)?;
        let parsed = template::parse(&rendered, &file_name).map_err(template_error)?;
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
            objects: objects.iter().map(ObjectRef::of).collect(),
        };

        match self.load(name, service_id).await? {
            Some((old, _)) if old.user_id != user_id => {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    "taken",
                    format!("service {service_id:?} belongs to another user of client {name:?}"),
                ))
            }
            Some((old, _)) if old.start_id == req.start_id => {
                // The same start again (a retried request): nothing to do.
                return Ok((false, self.status_of(&old).await?));
            }
            Some((old, cm)) => {
                tracing::info!(client = %name, service = service_id, old = %old.start_id, new = %req.start_id, "restart: stopping the previous start");
                self.delete_objects(&old).await?;
                let mut next = self.record_object(&key, &record)?;
                next.metadata.resource_version = cm.metadata.resource_version.clone();
                self.records()
                    .replace(&Self::record_name(&key), &PostParams::default(), &next)
                    .await
                    .map_err(|e| {
                        Failure::cluster(
                            "updating the service record (another start or stop was faster)",
                            &e,
                        )
                    })?;
            }
            None => {
                let cm = self.record_object(&key, &record)?;
                self.records()
                    .create(&PostParams::default(), &cm)
                    .await
                    .map_err(|e| {
                        Failure::cluster(
                            "recording the service (is another start of it in progress?)",
                            &e,
                        )
                    })?;
            }
        }

        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let mut created: Vec<(ObjectRef, ApiResource)> = Vec::new();
        for (object, ar) in objects.into_iter().zip(resources) {
            let r = ObjectRef::of(&object);
            let outcome = match serde_json::from_value::<DynamicObject>(object) {
                Ok(obj) => self
                    .dynamic(&namespace, &ar)
                    .create(&params, &obj)
                    .await
                    .map_err(|e| Failure::cluster(&format!("creating {r}"), &e)),
                Err(e) => Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template",
                    format!("{r}: {e}"),
                )),
            };
            match outcome {
                Ok(_) => created.push((r, ar)),
                Err(mut failure) => {
                    let undone = self.roll_back(&namespace, &created, &key).await;
                    failure.message =
                        format!("{}; nothing of the start is left{undone}", failure.message);
                    tracing::warn!(client = %name, service = service_id, error = %failure.message, "start failed and was rolled back");
                    return Err(failure);
                }
            }
        }
        tracing::info!(client = %name, service = service_id, start = %req.start_id, namespace = %namespace, objects = created.len(), "service started");
        Ok((true, record.status(Phase::Starting, "created")))
    }

    /// Removes what a failed start created, newest first, then its record. Returns a note for
    /// the response when something could not be removed.
    async fn roll_back(&self, ns: &str, created: &[(ObjectRef, ApiResource)], key: &str) -> String {
        let mut left = Vec::new();
        for (r, ar) in created.iter().rev() {
            if let Err(e) = self
                .dynamic(ns, ar)
                .delete(&r.name, &DeleteParams::background())
                .await
            {
                if !not_found(&e) {
                    left.push(format!("{r} ({})", kube_message(&e)));
                }
            }
        }
        if let Err(e) = self
            .records()
            .delete(&Self::record_name(key), &DeleteParams::default())
            .await
        {
            if !not_found(&e) {
                left.push(format!("the record ({})", kube_message(&e)));
            }
        }
        if left.is_empty() {
            String::new()
        } else {
            format!(" except: {} (a DELETE retries)", left.join(", "))
        }
    }

    async fn delete_objects(&self, record: &Record) -> Result<(), Failure> {
        for r in record.objects.iter().rev() {
            let ar = self.resource(&r.api_version, &r.kind).await.map_err(|m| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "cluster",
                    format!("deleting {r}: {m}"),
                )
            })?;
            match self
                .dynamic(&record.namespace, &ar)
                .delete(&r.name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(Failure::cluster(&format!("deleting {r}"), &e)),
            }
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
                Ok(Some(self.status_of(&record).await?))
            }
            _ => Ok(None),
        }
    }

    /// `DELETE /api/services/<name>/`; `None` when this client (and user) has no such service.
    pub async fn stop(
        &self,
        client: &ApiClient,
        service_id: &str,
        header_user: Option<&str>,
    ) -> Result<Option<ServiceStatus>, Failure> {
        let Some((record, _)) = self.load(&client.config.name, service_id).await? else {
            return Ok(None);
        };
        if !Self::check_user(&record, header_user) {
            return Ok(None);
        }
        self.delete_objects(&record).await?;
        let key = service_key(&record.client, &record.service_id);
        match self
            .records()
            .delete(&Self::record_name(&key), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Failure::cluster("removing the service record", &e)),
        }
        tracing::info!(client = %record.client, service = service_id, "service stopped");
        Ok(Some(record.status(Phase::Stopped, "stopped and removed")))
    }

    async fn status_of(&self, record: &Record) -> Result<ServiceStatus, Failure> {
        let ns = &record.namespace;
        let key = service_key(&record.client, &record.service_id);
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let selector = format!("{}={key}", self.keys.service);
        let pods = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Failure::cluster("listing the service's pods", &e))?
            .items;
        let mut exposure = None;
        let mut missing = Vec::new();
        for r in &record.objects {
            if r.kind == "Secret" && r.api_version == "v1" {
                continue;
            }
            if r.is_exposure() {
                let api: Api<Exposure> = Api::namespaced(self.kube.clone(), ns);
                exposure = api
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| Failure::cluster(&format!("reading {r}"), &e))?;
                if exposure.is_none() {
                    missing.push(r.to_string());
                }
                continue;
            }
            let ar = self.resource(&r.api_version, &r.kind).await.map_err(|m| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "cluster",
                    format!("reading {r}: {m}"),
                )
            })?;
            let found = self
                .dynamic(ns, &ar)
                .get_opt(&r.name)
                .await
                .map_err(|e| Failure::cluster(&format!("reading {r}"), &e))?;
            if found.is_none() {
                missing.push(r.to_string());
            }
        }
        let assessment = status::assess(&pods, exposure.as_ref(), &missing);
        let mut out = record.status(assessment.phase, assessment.reason.clone());
        out.address = assessment.address.clone();
        if assessment.phase == Phase::Failed {
            let api = &self.policy.config.api;
            if api.events > 0 {
                let events: Api<Event> = Api::namespaced(self.kube.clone(), ns);
                match events.list(&ListParams::default()).await {
                    Ok(list) => {
                        let about: BTreeSet<String> = pods
                            .iter()
                            .filter_map(|p| p.metadata.name.clone())
                            .chain(record.objects.iter().map(|r| r.name.clone()))
                            .collect();
                        out.events = status::recent_events(&list.items, &about, api.events);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list events for a failed service"),
                }
            }
            if api.log_lines > 0 {
                out.logs = self
                    .logs(ns, &pods, &assessment.failed_pods, api.log_lines)
                    .await;
            }
        }
        Ok(out)
    }

    async fn logs(&self, ns: &str, pods: &[Pod], failed: &[String], lines: usize) -> Vec<String> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let mut logs = Vec::new();
        for pod in pods {
            let Some(name) = pod.metadata.name.as_deref() else {
                continue;
            };
            if !failed.is_empty() && !failed.iter().any(|f| f == name) {
                continue;
            }
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            for c in containers {
                let params = LogParams {
                    container: Some(c.name.clone()),
                    tail_lines: Some(lines as i64),
                    ..LogParams::default()
                };
                match api.logs(name, &params).await {
                    Ok(text) => logs.push((format!("{name}/{}", c.name), text)),
                    Err(e) => tracing::debug!(pod = name, error = %e, "cannot read container log"),
                }
            }
        }
        status::last_lines(&logs, lines)
    }
}
