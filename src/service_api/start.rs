//! A start: everything that can be decided without the cluster is decided first (the request,
//! the namespace, whether the start goes ahead at all, the template and the plan); then the
//! record is taken with a resourceVersion-checked write, each object is created and its uid
//! recorded, and the start is marked done. It runs as a task of its own, so neither a client
//! that leaves nor a request that times out cuts it off half-way: it completes, or it rolls
//! back everything it created. A stop that takes the record over mid-way makes it remove the
//! object it was creating and answer `409 stopped`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::Value;

use super::auth::Client as ApiClient;
use super::cluster::{
    busy, chosen_tag, conflict, kube_message, new_nonce, not_found, now_secs, service_key,
    status_of_record, tag_for, valid_component, valid_service_id, Failure, ServiceStatus, Services,
    StartRequest, FIELD_MANAGER,
};
use super::config::Wire;
use super::limits::Refused;
use super::names;
use super::plan::{self, ObjectRef, PlanInput};
use super::record::{self, Entry, OnLostRecord, OnStart, Record, State};
use super::status::Phase;
use super::template::{self, is_inert, KeywordInput};
use crate::core::label::is_dns_label;

/// The refusal of a start over its client's limits.
fn over_limit(client: &str, refusal: Refused) -> Failure {
    let (message, retry_after) = match refusal {
        Refused::TooMany { max } => (
            format!("client {client:?} already has {max} starts in flight (api.maxStartsInFlight); retry when one has finished"),
            1,
        ),
        Refused::TooFast { max, retry_after } => (
            format!("client {client:?} began {max} starts this minute (api.startsPerMinute); retry in {retry_after} s"),
            retry_after,
        ),
    };
    Failure {
        retry_after: Some(retry_after),
        ..Failure::new(StatusCode::TOO_MANY_REQUESTS, "limit", message)
    }
}

fn stopped_during_start(service_id: &str) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "stopped",
        format!("service {service_id:?} was stopped while it was starting; nothing of this start is left"),
    )
}

impl Services {
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
        let wire = client.config.wire;
        // The name objects are made from: the uuidcode itself, or for the manager's clients its
        // injective mapping (see `names`).
        let object_id = match wire {
            Wire::Portico if !valid_service_id(service_id) => {
                return Err(Failure::bad(
                    "uuidcode",
                    format!("header uuidcode {service_id:?} must be a lowercase DNS label of at most 40 characters that starts with a letter (it names the service's Exposure and Service; letters, digits, inner '-'), e.g. lab-{service_id}"),
                ));
            }
            Wire::Portico => service_id.to_string(),
            Wire::K8smgr => names::object_id(service_id)
                .map_err(|e| Failure::bad("uuidcode", format!("header uuidcode: {e}")))?,
        };
        if req.start_id.is_empty() || req.start_id.len() > 64 || !is_inert(&req.start_id) {
            return Err(Failure::bad(
                "start_id",
                "start_id must be 1-64 letters, digits or . _ - + = / @ :",
            ));
        }
        if wire == Wire::K8smgr {
            if let Some(problem) = names::start_id_problem(&object_id, &req.start_id) {
                return Err(Failure::bad("start_id", problem));
            }
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
        let chosen = match api.tag_option.as_str() {
            "" => None,
            option => match req.user_options.get(option) {
                None => None,
                Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                Some(other) => {
                    return Err(Failure::bad(
                        "tag",
                        format!("user_options.{option} (the ipaddr tag) must be a non-empty string, not {other}"),
                    ))
                }
            },
        };
        let tag = match chosen {
            Some(t) => chosen_tag(&self.policy, &user, &t).map_err(|m| Failure::bad("tag", m))?,
            None => {
                tag_for(&self.policy, &user, &object_id).map_err(|m| Failure::bad("user_id", m))?
            }
        };
        let key = service_key(name, service_id);
        // Held until the start's task ends, however it ends.
        let permit = self
            .limits
            .try_begin(name)
            .map_err(|refusal| over_limit(name, refusal))?;

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
                return Ok((false, self.status_for(old).await?));
            }
            OnStart::Create | OnStart::Replace => {}
        }

        let dir: PathBuf = Path::new(&api.descriptions)
            .join(name)
            .join(svc)
            .join(option);
        let file = dir.join(&api.yaml_filename);
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
            let input_dir = dir.join(&api.input_dir);
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
        // The manager's clients restart a lab under a new start_id while the previous start's
        // objects may still be going away, so what the API makes for them is named per start.
        // `<id>` is what the wire's templates expect: the uuidcode, or the manager's
        // `<name>-<start_id>`.
        let (id_keyword, secret_name, cert_secret_name, exposure_name) = match wire {
            Wire::Portico => (
                object_id.clone(),
                format!("{object_id}-env"),
                format!("{object_id}-tls"),
                object_id.clone(),
            ),
            Wire::K8smgr => (
                names::start_object_id(&object_id, &req.start_id),
                names::env_secret(&object_id, &req.start_id),
                names::certs_secret(&object_id, &req.start_id),
                names::lab_service(&object_id, &req.start_id),
            ),
        };
        let unique = format!("{name}_{user_id}");
        let stage = api.active_stage();
        let mut keywords = template::keywords(&KeywordInput {
            names: &api.keywords,
            service_id: &id_keyword,
            start_id: &req.start_id,
            user_id: &user_id,
            unique_user_id: &unique,
            client: name,
            secret_name: &secret_name,
            cert_secret_name: &cert_secret_name,
            namespace: &namespace,
            tag: &tag,
            input: packed.as_deref(),
            stage_table: api.stages.get(&stage),
            client_table: Some(&client.config.replacements),
            client_stage_table: client.config.stage_replacements.get(&stage),
            user_options: Some(&req.user_options),
        });
        // The user's home: made (once) only for a template that mounts it, and only for a
        // start that goes ahead; never part of the record, so no stop removes it.
        let home_placeholder = format!(
            "{}{}{}",
            api.indicators.open, api.keywords.user_home, api.indicators.close
        );
        let skel_placeholder = format!(
            "{}{}{}",
            api.indicators.open, api.keywords.user_home_skel, api.indicators.close
        );
        if !api.user_homes.enabled {
            for k in [&api.keywords.user_home, &api.keywords.user_home_skel] {
                keywords
                    .refused
                    .insert(k.clone(), "api.userHomes.enabled is off".to_string());
            }
        } else {
            if text.contains(&home_placeholder) {
                let claim = self.ensure_home(name, &user_id, &namespace).await?;
                keywords
                    .values
                    .insert(api.keywords.user_home.clone(), claim);
            }
            let skel = if text.contains(&skel_placeholder) && !api.user_homes.skel.is_empty() {
                let dir = PathBuf::from(&api.user_homes.skel);
                tokio::task::spawn_blocking(move || super::input::pack(&dir))
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
            match skel {
                Some(packed) => {
                    keywords
                        .values
                        .insert(api.keywords.user_home_skel.clone(), packed);
                }
                None => {
                    keywords.refused.insert(
                        api.keywords.user_home_skel.clone(),
                        "api.userHomes.skel names no folder with files".to_string(),
                    );
                }
            }
        }
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
            retry_after: None,
        };
        let parsed = template::render_objects(&text, &file_name, &api.indicators, &keywords)
            .map_err(template_error)?;
        // The manager's names for the certificates, as the lab reads them from its env.
        let cert_data = req
            .certs
            .as_ref()
            .filter(|_| api.ssl.enabled)
            .map(super::body::cert_env);
        let nonce = new_nonce(&key, &req.start_id);
        let objects = plan::plan(
            &self.keys,
            &PlanInput {
                file: &file_name,
                namespace: &namespace,
                user: &user,
                tag: &tag,
                client: name,
                service_id: &object_id,
                start_id: &req.start_id,
                nonce: &nonce,
                key: &key,
                secret_name: &secret_name,
                exposure_name: &exposure_name,
                own_service_suffices: wire == Wire::K8smgr,
                certs: cert_data.as_ref().map(|d| (cert_secret_name.as_str(), d)),
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
        tokio::spawn(async move {
            let outcome = this.create(work).await;
            drop(permit);
            outcome
        })
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
