//! The API operations (get, list, create, update, patch, delete, deletecollection) with the
//! apiserver's order of events — defaulting, mutating admission, naming and uid, registry rules
//! and validation, validating admission, optimistic-concurrency commit — and the request
//! dispatcher that maps a REST path to them, counts requests and injects faults.

use crate::admission::{self, Attributes};
use crate::auth::{TokenEntry, UserInfo};
use crate::error::{ApiError, FieldError};
use crate::faults::{Counters, FaultState};
use crate::patch::{self, PatchKind};
use crate::resources::ResourceInfo;
use crate::rules::{self, RuleConfig};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::util::{as_object_mut, meta_mut, meta_str, new_uid, now_rfc3339, rand_suffix};
use crate::validation;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Service and allocation rules.
    pub rules: RuleConfig,
    /// Pending → Running delay of the kubelet stand-in.
    pub kubelet_delay: Duration,
    /// Images the kubelet stand-in pretends to run (`crate::images`).
    pub images: Vec<String>,
    /// Pods of Jobs succeed after running this long (None: they run until killed).
    pub pod_succeed_after: Option<Duration>,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Watch timeout when the client names none.
    pub default_watch_timeout: Duration,
    /// Run the built-in controllers.
    pub controllers: bool,
    /// Name of the one node.
    pub node_name: String,
}

/// Everything the server, controllers and handles share.
pub struct Shared {
    store: Mutex<Store>,
    /// Fixed settings.
    pub cfg: Config,
    /// Fault injection.
    pub faults: Mutex<FaultState>,
    /// Request counters.
    pub counters: Mutex<Counters>,
    endpoints: Mutex<BTreeMap<String, String>>,
    /// The token table.
    pub tokens: Vec<TokenEntry>,
    /// Fake container log lines per (namespace, pod).
    pub pod_logs: Mutex<BTreeMap<(String, String), Vec<String>>>,
    /// Bumped to close every connection and watch (restart).
    pub epoch: tokio::sync::watch::Sender<u64>,
}

/// Locks a mutex, recovering from poisoning (state stays usable after a panicking test thread).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Builds the shared state.
    pub fn new(
        cfg: Config,
        window: usize,
        tokens: Vec<TokenEntry>,
        endpoints: BTreeMap<String, String>,
    ) -> Self {
        let (epoch, _) = tokio::sync::watch::channel(0);
        Self {
            store: Mutex::new(Store::new(window)),
            cfg,
            faults: Mutex::new(FaultState::default()),
            counters: Mutex::new(Counters::default()),
            endpoints: Mutex::new(endpoints),
            tokens,
            pod_logs: Mutex::new(BTreeMap::new()),
            epoch,
        }
    }

    /// The store, locked.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Address for a webhook service `namespace/name`.
    pub fn endpoint(&self, key: &str) -> Option<String> {
        lock(&self.endpoints).get(key).cloned()
    }

    /// Sets the address for a webhook service `namespace/name`.
    pub fn set_endpoint(&self, key: &str, addr: &str) {
        lock(&self.endpoints).insert(key.into(), addr.into());
    }

    /// Appends fake log lines for a pod.
    pub fn append_log(&self, ns: &str, name: &str, lines: &[String]) {
        lock(&self.pod_logs)
            .entry((ns.into(), name.into()))
            .or_default()
            .extend(lines.iter().cloned());
    }
}

/// Per-request write options.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply).
    pub force: bool,
    /// The User-Agent (default field manager).
    pub user_agent: String,
    /// DeleteOptions body.
    pub delete_options: Value,
    /// The object comes from server-side apply (its managedFields are already set).
    pub applied: bool,
    /// A DELETE that is one item of a deletecollection: the apiserver admits each item with
    /// the collection request's attributes, so the AdmissionReview has no `name` (the item is
    /// in `oldObject`).
    pub collection: bool,
}

impl WriteOpts {
    fn manager(&self) -> String {
        if let Some(m) = &self.field_manager {
            return m.clone();
        }
        let ua = self.user_agent.split('/').next().unwrap_or("").trim();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.to_string()
        }
    }
}

/// A successful write or read.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HTTP status (200 or 201).
    pub code: u16,
    /// The object returned.
    pub object: Value,
    /// Admission warnings.
    pub warnings: Vec<String>,
}

/// Sets apiVersion and kind for the served version.
pub fn present(info: &ResourceInfo, mut obj: Value) -> Value {
    let m = as_object_mut(&mut obj);
    m.insert("apiVersion".into(), json!(info.api_version()));
    m.insert("kind".into(), json!(info.kind));
    obj
}

fn check_kind(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not an object",
        ));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if !k.is_empty() && k != info.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        let group = av.split_once('/').map(|(g, _)| g).unwrap_or("");
        if !av.is_empty() && group != info.group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    *obj = present(info, std::mem::take(obj));
    Ok(())
}

fn set_namespace(info: &ResourceInfo, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if info.namespaced {
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn invalid_if(info: &ResourceInfo, name: &str, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name, &errs))
    }
}

/// GET one object.
pub fn get(shared: &Shared, info: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
    let store = shared.store();
    store
        .get(&info.key(), ns, name)
        .cloned()
        .map(|o| present(info, o))
        .ok_or_else(|| ApiError::not_found(info, name))
}

/// LIST objects.
pub fn list(
    shared: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Value {
    list_page(shared, info, ns, labels, fields, None)
}

/// Where a LIST page starts: the continue token's resourceVersion (None on the first page), the
/// offset into the matching objects, and the page size.
struct Page {
    rv: Option<String>,
    offset: usize,
    limit: usize,
}

/// LIST objects, one page of them when `page` is set (`limit`/`continue`). The matching objects
/// are counted borrowed; only those on the page are cloned.
fn list_page(
    shared: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    page: Option<Page>,
) -> Value {
    let store = shared.store();
    let (offset, limit) = page
        .as_ref()
        .map_or((0, usize::MAX), |p| (p.offset, p.limit));
    let mut total = 0;
    let mut items: Vec<Value> = Vec::new();
    for o in store
        .list_ref(&info.key(), ns)
        .filter(|o| labels.matches_object(o) && fields.matches(o))
    {
        if total >= offset && items.len() < limit {
            items.push(present(info, o.clone()));
        }
        total += 1;
    }
    let rv = page
        .as_ref()
        .and_then(|p| p.rv.clone())
        .unwrap_or_else(|| store.rv().to_string());
    let mut out = json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": rv},
        "items": [],
    });
    let next = offset.min(total) + items.len();
    if page.is_some() && next < total {
        out["metadata"]["continue"] = json!(format!("{rv}:{next}"));
        out["metadata"]["remainingItemCount"] = json!(total - next);
    }
    out["items"] = Value::Array(items);
    out
}

/// CREATE.
pub async fn create(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    ns: &str,
    mut obj: Value,
    o: &WriteOpts,
) -> Result<Outcome, ApiError> {
    check_kind(info, &mut obj)?;
    crate::decode::byte_fields(info, &mut obj)?;
    set_namespace(info, ns, &mut obj)?;
    {
        let meta = meta_mut(&mut obj);
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
        if !o.applied {
            meta.remove("managedFields");
        }
    }
    if info.namespaced {
        let terminating = match shared.store().namespace(ns) {
            None => return Err(ApiError::namespace_not_found(ns)),
            Some(n) => n.pointer("/metadata/deletionTimestamp").is_some(),
        };
        // The NamespaceLifecycle admission plugin (before any webhook).
        if terminating && !info.is("", "events") {
            let mut e = ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.group_resource(),
                meta_str(&obj, "name")
            ));
            e.details = Some(json!({"name": meta_str(&obj, "name"), "kind": info.plural,
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}));
            return Err(e);
        }
    }
    rules::apply_defaults(info, &mut obj);
    let manager = o.manager();
    let attrs = Attributes {
        operation: "CREATE",
        info: info.clone(),
        subresource: String::new(),
        name: meta_str(&obj, "name").to_string(),
        namespace: if info.namespaced {
            ns.into()
        } else {
            String::new()
        },
        old: None,
        user: user.clone(),
        dry_run: o.dry_run,
        options: admission::options("CREATE", o.field_manager.as_deref(), o.dry_run, None),
    };
    let mut holder = Some(obj);
    let mut warnings = admission::mutate(shared, &attrs, &mut holder).await?;
    let mut obj = holder.unwrap_or(Value::Null);
    check_kind(info, &mut obj)?;
    set_namespace(info, ns, &mut obj)?;
    // BeforeCreate: name, uid, timestamps.
    let mut name = meta_str(&obj, "name").to_string();
    if name.is_empty() {
        let gen = meta_str(&obj, "generateName").to_string();
        if !gen.is_empty() {
            name = format!("{gen}{}", rand_suffix(5));
        }
    }
    {
        let meta = meta_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
    }
    rules::prepare_for_create(info, &mut obj);
    rules::apply_defaults(info, &mut obj);
    let mut errs = validation::name_errors(info, &name);
    errs.extend(validation::object_label_errors(&obj));
    errs.extend(rules::validate(info, &obj));
    invalid_if(info, &name, errs)?;
    // The Service as asked for, before allocation: allocated again at commit if what was
    // allocated here was taken meanwhile by a concurrent create.
    let mut requested = None;
    if info.is("", "services") {
        requested = Some(obj.clone());
        let st = shared.store();
        if let Err(errs) = rules::service_allocate(&st, &shared.cfg.rules, &mut obj, None) {
            return Err(ApiError::invalid(info, &name, &errs));
        }
    }
    let mut attrs = attrs;
    attrs.name = name.clone();
    warnings.extend(admission::validate(shared, &attrs, Some(&obj)).await?);
    if !o.applied {
        patch::track_update(None, &mut obj, &manager, &info.api_version(), "");
    }
    let stored = {
        let mut st = shared.store();
        if st
            .get(&info.key(), if info.namespaced { ns } else { "" }, &name)
            .is_some()
        {
            return Err(ApiError::already_exists(info, &name));
        }
        if let Some(requested) = requested {
            rules::service_commit(&st, &shared.cfg.rules, &mut obj, &requested)
                .map_err(|errs| ApiError::invalid(info, &name, &errs))?;
        }
        if info.namespaced && st.namespace(ns).is_none() {
            return Err(ApiError::namespace_not_found(ns));
        }
        if o.dry_run {
            obj
        } else {
            st.put(&info.key(), obj)
        }
    };
    Ok(Outcome {
        code: 201,
        object: present(info, stored),
        warnings,
    })
}

enum UpdateErr {
    Api(ApiError),
    Stale,
}

impl From<ApiError> for UpdateErr {
    fn from(e: ApiError) -> Self {
        UpdateErr::Api(e)
    }
}

/// The object without what changes on every write (resourceVersion, managedFields times).
fn strip_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(mf) = m.get_mut("managedFields").and_then(Value::as_array_mut) {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    v
}

#[allow(clippy::too_many_arguments)]
async fn finish_update(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    sub: &str,
    old: Value,
    mut new: Value,
    o: &WriteOpts,
    track: bool,
) -> Result<Outcome, UpdateErr> {
    let name = meta_str(&old, "name").to_string();
    let ns = meta_str(&old, "namespace").to_string();
    crate::decode::byte_fields(info, &mut new)?;
    rules::apply_defaults(info, &mut new);
    let attrs = Attributes {
        operation: "UPDATE",
        info: info.clone(),
        subresource: sub.into(),
        name: name.clone(),
        namespace: ns.clone(),
        old: Some(present(info, old.clone())),
        user: user.clone(),
        dry_run: o.dry_run,
        options: admission::options("UPDATE", o.field_manager.as_deref(), o.dry_run, None),
    };
    let mut holder = Some(present(info, new));
    let mut warnings = admission::mutate(shared, &attrs, &mut holder).await?;
    let new = holder.unwrap_or(Value::Null);
    let mut new = rules::merge_for_update(info, sub, &old, new);
    rules::apply_defaults(info, &mut new);
    let mut errs = validation::object_label_errors(&new);
    if sub.is_empty() {
        errs.extend(validation::immutable_errors(info, &old, &new));
        errs.extend(rules::validate(info, &new));
    }
    invalid_if(info, &name, errs)?;
    if info.is("", "services") && sub.is_empty() {
        let st = shared.store();
        if let Err(errs) = rules::service_allocate(&st, &shared.cfg.rules, &mut new, Some(&old)) {
            return Err(ApiError::invalid(info, &name, &errs).into());
        }
    }
    rules::bump_generation(&old, &mut new);
    warnings.extend(admission::validate(shared, &attrs, Some(&new)).await?);
    if track {
        patch::track_update(Some(&old), &mut new, &o.manager(), &info.api_version(), sub);
    }
    let mut st = shared.store();
    let cur = st
        .get(&info.key(), &ns, &name)
        .ok_or_else(|| ApiError::not_found(info, &name))?;
    if meta_str(cur, "resourceVersion") != meta_str(&old, "resourceVersion") {
        return Err(UpdateErr::Stale);
    }
    if strip_volatile(cur) == strip_volatile(&new) {
        return Ok(Outcome {
            code: 200,
            object: present(info, cur.clone()),
            warnings,
        });
    }
    if info.is("", "services") && sub.is_empty() {
        if let Err(errs) = rules::service_allocate(&st, &shared.cfg.rules, &mut new, Some(&old)) {
            return Err(ApiError::invalid(info, &name, &errs).into());
        }
    }
    if o.dry_run {
        return Ok(Outcome {
            code: 200,
            object: present(info, new),
            warnings,
        });
    }
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if deleting && no_finalizers {
        st.put(&info.key(), new);
        let gone = st.remove(&info.key(), &ns, &name).unwrap_or(Value::Null);
        return Ok(Outcome {
            code: 200,
            object: present(info, gone),
            warnings,
        });
    }
    let stored = st.put(&info.key(), new);
    Ok(Outcome {
        code: 200,
        object: present(info, stored),
        warnings,
    })
}

/// UPDATE (PUT).
#[allow(clippy::too_many_arguments)]
pub async fn update(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
    mut obj: Value,
    o: &WriteOpts,
) -> Result<Outcome, ApiError> {
    check_kind(info, &mut obj)?;
    let body_name = meta_str(&obj, "name").to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    set_namespace(info, ns, &mut obj)?;
    let want_rv = meta_str(&obj, "resourceVersion").to_string();
    for _ in 0..10 {
        let old = shared
            .store()
            .get(&info.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if want_rv.is_empty() {
            meta_mut(&mut obj).remove("resourceVersion");
        } else if want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(info, name));
        }
        match finish_update(shared, user, info, sub, old, obj.clone(), o, true).await {
            Ok(out) => return Ok(out),
            Err(UpdateErr::Api(e)) => return Err(e),
            Err(UpdateErr::Stale) if !want_rv.is_empty() => {
                return Err(ApiError::conflict(info, name))
            }
            Err(UpdateErr::Stale) => continue,
        }
    }
    Err(ApiError::conflict(info, name))
}

/// PATCH (JSON, merge, strategic merge, server-side apply).
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
    kind: PatchKind,
    body: &[u8],
    o: &WriteOpts,
) -> Result<Outcome, ApiError> {
    let doc: Value = if kind == PatchKind::Apply {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    if kind == PatchKind::Apply {
        if o.field_manager.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let body_name = meta_str(&doc, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    for _ in 0..10 {
        let old = shared.store().get(&info.key(), ns, name).cloned();
        let Some(old) = old else {
            if kind != PatchKind::Apply || !sub.is_empty() {
                return Err(ApiError::not_found(info, name));
            }
            let mut cfg = doc.clone();
            meta_mut(&mut cfg).insert("name".into(), json!(name));
            let obj = patch::server_side_apply(
                None,
                &cfg,
                o.manager().as_str(),
                &info.api_version(),
                "",
                o.force,
            )
            .map_err(|c| ApiError::conflict_msg(info, name, patch::conflict_message(&c)))?;
            let mut obj = obj;
            meta_mut(&mut obj).insert("name".into(), json!(name));
            let mut o2 = o.clone();
            o2.applied = true;
            return match create(shared, user, info, ns, obj, &o2).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                other => other,
            };
        };
        let presented = present(info, old.clone());
        let new = match kind {
            PatchKind::Json => patch::json_patch(&presented, &doc).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?,
            PatchKind::Merge => patch::merge_patch(&presented, &doc),
            PatchKind::Strategic => patch::strategic_merge_patch(&presented, &doc),
            PatchKind::Apply => {
                let mut cfg = doc.clone();
                meta_mut(&mut cfg).insert("name".into(), json!(name));
                if info.namespaced {
                    meta_mut(&mut cfg).insert("namespace".into(), json!(ns));
                }
                let cfg = if sub == "status" {
                    json!({"metadata": cfg["metadata"], "status": cfg.get("status").cloned().unwrap_or(json!({}))})
                } else {
                    cfg
                };
                patch::server_side_apply(
                    Some(&presented),
                    &cfg,
                    o.manager().as_str(),
                    &info.api_version(),
                    sub,
                    o.force,
                )
                .map_err(|c| ApiError::conflict_msg(info, name, patch::conflict_message(&c)))?
            }
        };
        let mut new = new;
        let patched_rv = meta_str(&new, "resourceVersion").to_string();
        if !patched_rv.is_empty() && patched_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(info, name));
        }
        if meta_str(&new, "name") != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name")
            )));
        }
        set_namespace(info, ns, &mut new)?;
        let track = kind != PatchKind::Apply;
        match finish_update(shared, user, info, sub, old, new, o, track).await {
            Ok(out) => return Ok(out),
            Err(UpdateErr::Api(e)) => return Err(e),
            Err(UpdateErr::Stale) => continue,
        }
    }
    Err(ApiError::conflict(info, name))
}

/// DELETE.
pub async fn delete(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    o: &WriteOpts,
) -> Result<Outcome, ApiError> {
    let old = shared
        .store()
        .get(&info.key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let pre = &o.delete_options["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        if uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict_msg(
                info,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict_msg(
                info,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
    }
    // As the apiserver: mutating and validating webhooks both see the stored object as
    // `oldObject`, `object` null and the DeleteOptions as `options`.
    let attrs = Attributes {
        operation: "DELETE",
        info: info.clone(),
        subresource: String::new(),
        name: if o.collection {
            String::new()
        } else {
            name.into()
        },
        namespace: if info.namespaced {
            ns.into()
        } else {
            String::new()
        },
        old: Some(present(info, old.clone())),
        user: user.clone(),
        dry_run: o.dry_run,
        options: admission::options("DELETE", None, o.dry_run, Some(&o.delete_options)),
    };
    let mut none = None;
    let mut warnings = admission::mutate(shared, &attrs, &mut none).await?;
    warnings.extend(admission::validate(shared, &attrs, None).await?);
    if o.dry_run {
        return Ok(Outcome {
            code: 200,
            object: present(info, old),
            warnings,
        });
    }
    if info.is("", "namespaces") {
        return delete_namespace(shared, info, name, warnings).await;
    }
    let policy = o.delete_options["propagationPolicy"]
        .as_str()
        .unwrap_or("Background")
        .to_string();
    let orphan = policy == "Orphan" || o.delete_options["orphanDependents"].as_bool() == Some(true);
    let mut st = shared.store();
    let Some(cur) = st.get(&info.key(), ns, name).cloned() else {
        return Err(ApiError::not_found(info, name));
    };
    let has_finalizers = cur
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if has_finalizers {
        let mut marked = cur.clone();
        if marked.pointer("/metadata/deletionTimestamp").is_none() {
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            marked = st.put(&info.key(), marked);
        }
        return Ok(Outcome {
            code: 200,
            object: present(info, marked),
            warnings,
        });
    }
    let uid = meta_str(&cur, "uid").to_string();
    if orphan {
        orphan_dependents(&mut st, &uid);
    }
    let gone = st.remove(&info.key(), ns, name).unwrap_or(cur);
    drop(st);
    if info.is("", "pods") {
        lock(&shared.pod_logs).remove(&(ns.to_string(), name.to_string()));
    }
    Ok(Outcome {
        code: 200,
        object: present(info, gone),
        warnings,
    })
}

/// A namespace DELETE that admission allowed: the namespace turns `Terminating` (new content is
/// refused), then its contents are deleted as the namespace controller does it, and the
/// namespace goes once it is empty. Done within the request, so a namespace whose contents
/// nothing refuses is gone when the DELETE answers; otherwise it stays `Terminating` and the
/// controllers retry ([`finish_namespace_deletion`]).
async fn delete_namespace(
    shared: &Arc<Shared>,
    info: &ResourceInfo,
    name: &str,
    warnings: Vec<String>,
) -> Result<Outcome, ApiError> {
    {
        let mut st = shared.store();
        let cur = st
            .namespace(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if cur.pointer("/metadata/deletionTimestamp").is_none() {
            let mut marked = cur;
            meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            marked["status"] = json!({"phase": "Terminating"});
            st.put(&info.key(), marked);
        }
    }
    let out = finish_namespace_deletion(shared, name).await;
    Ok(Outcome {
        code: 200,
        object: present(info, out),
        warnings,
    })
}

/// The namespace controller's work on a `Terminating` namespace: every object in it is deleted
/// as `system:serviceaccount:kube-system:namespace-controller` through admission, as the
/// items of a deletecollection with `propagationPolicy: Background` (webhooks see DELETE,
/// `oldObject`, no `name`); then, when nothing is left (a webhook may refuse, a finalizer may
/// hold an object), the namespace is removed. Returns the namespace as last seen (phase
/// `Terminating`).
pub async fn finish_namespace_deletion(shared: &Arc<Shared>, ns: &str) -> Value {
    let items: Vec<(ResourceInfo, String)> = {
        let st = shared.store();
        st.all()
            .filter(|(_, v)| meta_str(v, "namespace") == ns)
            .filter_map(|(gr, v)| {
                let info = st.find_any(&gr.group, &gr.resource)?;
                Some((info, meta_str(v, "name").to_string()))
            })
            .collect()
    };
    let user = UserInfo::service_account("kube-system", crate::auth::NAMESPACE_CONTROLLER);
    let o = WriteOpts {
        user_agent: "kube-controller-manager/v1.37.0 (sandbox)".into(),
        delete_options: json!({"propagationPolicy": "Background"}),
        collection: true,
        ..Default::default()
    };
    for (info, name) in items {
        // Boxed: `delete` is what called us (for the namespace).
        if let Err(e) = Box::pin(delete(shared, &user, &info, ns, &name, &o)).await {
            if e.code != 404 {
                tracing::info!(namespace = ns, object = %name, error = %e.message,
                    "namespace content deletion refused");
            }
        }
    }
    let mut st = shared.store();
    let key = crate::resources::GroupResource::new("", "namespaces");
    // Objects of resources no longer served (their CRD went) cannot be deleted through the
    // API; they go with the namespace.
    let orphaned: Vec<(crate::resources::GroupResource, String)> = st
        .all()
        .filter(|(gr, v)| {
            meta_str(v, "namespace") == ns && st.find_any(&gr.group, &gr.resource).is_none()
        })
        .map(|(gr, v)| (gr.clone(), meta_str(v, "name").to_string()))
        .collect();
    for (gr, n) in orphaned {
        st.remove(&gr, ns, &n);
    }
    let left = st.all().any(|(_, v)| meta_str(v, "namespace") == ns);
    let cur = st.namespace(ns).cloned().unwrap_or(Value::Null);
    let mut out = if left || cur.is_null() {
        cur
    } else {
        st.remove(&key, "", ns).unwrap_or(cur)
    };
    if out.is_object() {
        out["status"] = json!({"phase": "Terminating"});
    }
    out
}

fn orphan_dependents(st: &mut Store, uid: &str) {
    let deps: Vec<(crate::resources::GroupResource, Value)> = st
        .all()
        .filter(|(_, v)| {
            v.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|r| r["uid"].as_str() == Some(uid)))
        })
        .map(|(gr, v)| (gr.clone(), v.clone()))
        .collect();
    for (gr, mut v) in deps {
        if let Some(a) = v
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            a.retain(|r| r["uid"].as_str() != Some(uid));
        }
        st.put(&gr, v);
    }
}

/// One API request, independent of HTTP.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: http::Method,
    /// Path without query.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Content-Type.
    pub content_type: String,
    /// Accept.
    pub accept: String,
    /// User-Agent.
    pub user_agent: String,
    /// Body.
    pub body: Bytes,
    /// The authenticated (possibly impersonated) user.
    pub user: UserInfo,
}

/// What to stream for a WATCH.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The resource.
    pub info: ResourceInfo,
    /// Namespace filter.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Requested resourceVersion.
    pub resource_version: Option<String>,
    /// allowWatchBookmarks.
    pub bookmarks: bool,
    /// sendInitialEvents.
    pub send_initial: bool,
    /// timeoutSeconds (or the default).
    pub timeout: Duration,
}

/// The reply to a [`Call`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// A JSON body.
    Json {
        /// HTTP status.
        code: u16,
        /// Body.
        body: Value,
        /// Warning headers.
        warnings: Vec<String>,
        /// Retry-After for 429s.
        retry_after: Option<u64>,
    },
    /// A plain-text body (pod logs).
    Text(String),
    /// A watch stream.
    Watch(WatchSpec),
}

impl Reply {
    fn ok(code: u16, body: Value, warnings: Vec<String>) -> Self {
        Reply::Json {
            code,
            body,
            warnings,
            retry_after: None,
        }
    }
    /// An error reply.
    pub fn err(e: ApiError) -> Self {
        Reply::Json {
            code: e.code,
            body: e.to_status(),
            warnings: Vec::new(),
            retry_after: e.retry_after,
        }
    }
}

/// A parsed resource path.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub info: ResourceInfo,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: String,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...` resource paths (None: not a resource path).
pub fn parse_target(store: &Store, path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let (ns, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, r, more @ ..]
            if !(more.is_empty() && (*r == "status" || *r == "finalize")) =>
        {
            (Some(*ns), &rest[2..])
        }
        _ => (None, rest),
    };
    let plural = rest[0];
    let info = store
        .find(group, version, plural)
        .ok_or_else(ApiError::path_not_found)?;
    if ns.is_some() && !info.namespaced {
        return Err(ApiError::path_not_found());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    if rest.len() > 3 {
        return Err(ApiError::path_not_found());
    }
    let sub_ok = sub.is_empty()
        || (sub == "status" && info.status)
        || info.extra_subresources.contains(&sub);
    if !sub_ok {
        return Err(ApiError::path_not_found());
    }
    Ok(Some(Target {
        info,
        namespace: ns.map(str::to_string),
        name,
        sub,
    }))
}

/// The Kubernetes verb of a request.
pub fn verb_of(
    method: &http::Method,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> &'static str {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// `limit` and `continue`, as clients page through large lists (kube-rs asks for 500 at a time).
/// The token is `<resourceVersion>:<offset>`; every page reports the first page's
/// resourceVersion, so a watch that follows replays whatever changed while paging (the real
/// apiserver serves all pages from one snapshot instead).
/// The page a LIST asks for with `limit` and `continue` (None: no `limit`, the whole list).
fn page(query: &BTreeMap<String, String>) -> Result<Option<Page>, ApiError> {
    let Some(limit) = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
    else {
        return Ok(None);
    };
    let (rv, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(rv, off)| Some((rv.to_string(), off.parse::<usize>().ok()?)));
            let (rv, offset) = parsed.ok_or_else(|| {
                ApiError::bad_request(format!("invalid continue token {token:?}"))
            })?;
            (Some(rv), offset)
        }
        None => (None, 0),
    };
    Ok(Some(Page { rv, offset, limit }))
}

fn selectors(query: &BTreeMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn decode_body(call: &Call) -> Result<Value, ApiError> {
    if call.body.is_empty() {
        return Ok(json!({}));
    }
    let ct = call.content_type.to_ascii_lowercase();
    if ct.contains("yaml") {
        serde_yaml::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if ct.contains("protobuf") {
        crate::protobuf::decode(&call.body).map_err(|e| {
            let reason = match e.status() {
                415 => "UnsupportedMediaType",
                500 => "InternalError",
                _ => "BadRequest",
            };
            ApiError::new(e.status(), reason, e.to_string())
        })
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
    }
}

/// Handles a resource request (the caller has authenticated it).
pub async fn dispatch(shared: &Arc<Shared>, call: Call) -> Reply {
    let target = {
        let store = shared.store();
        match parse_target(&store, &call.path) {
            Ok(Some(t)) => t,
            Ok(None) => return Reply::err(ApiError::path_not_found()),
            Err(e) => return Reply::err(e),
        }
    };
    let verb = verb_of(&call.method, &target, &call.query);
    let counted = if target.sub.is_empty() {
        target.info.group_resource()
    } else {
        format!("{}/{}", target.info.group_resource(), target.sub)
    };
    lock(&shared.counters).incr(&call.user.username, verb, &counted);
    let decision = lock(&shared.faults).decide(&call.user.username, verb, &counted);
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    if decision.error {
        return Reply::err(ApiError::internal("sandbox: injected fault"));
    }
    if let Some(retry) = decision.throttle {
        return Reply::err(ApiError::too_many_requests(retry));
    }
    match handle(shared, &call, &target, verb).await {
        Ok(r) => r,
        Err(e) => Reply::err(e),
    }
}

async fn handle(
    shared: &Arc<Shared>,
    call: &Call,
    t: &Target,
    verb: &str,
) -> Result<Reply, ApiError> {
    let info = &t.info;
    let ns = t.namespace.clone().unwrap_or_default();
    let q = &call.query;
    let o = WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: q.get("fieldManager").cloned(),
        force: q.get("force").is_some_and(|f| f == "true"),
        user_agent: call.user_agent.clone(),
        delete_options: Value::Null,
        applied: false,
        collection: false,
    };
    if info.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::path_not_found());
    }
    let name = t.name.clone().unwrap_or_default();
    let user = &call.user;
    match verb {
        "get" if t.sub == "log" => {
            get(shared, info, &ns, &name)?;
            let lines = lock(&shared.pod_logs)
                .get(&(ns.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            let tail = q.get("tailLines").and_then(|t| t.parse::<usize>().ok());
            let start = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
            let mut text = lines[start..].join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            Ok(Reply::Text(text))
        }
        "get" => Ok(Reply::ok(200, get(shared, info, &ns, &name)?, vec![])),
        "list" => {
            let (l, f) = selectors(q)?;
            let scope = t.namespace.as_deref();
            let out = list_page(shared, info, scope, &l, &f, page(q)?);
            Ok(Reply::ok(200, out, vec![]))
        }
        "watch" => {
            let (mut l, mut f) = selectors(q)?;
            if let Some(n) = &t.name {
                f.terms.push(("metadata.name".into(), n.clone(), true));
            }
            if l.requirements.is_empty() {
                l = LabelSelector::default();
            }
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(shared.cfg.default_watch_timeout);
            Ok(Reply::Watch(WatchSpec {
                info: info.clone(),
                namespace: t.namespace.clone(),
                labels: l,
                fields: f,
                resource_version: q.get("resourceVersion").cloned(),
                bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
                send_initial: q.get("sendInitialEvents").is_some_and(|b| b == "true"),
                timeout,
            }))
        }
        "create" => {
            if t.name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            let body = decode_body(call)?;
            let out = create(shared, user, info, &ns, body, &o).await?;
            Ok(Reply::ok(out.code, out.object, out.warnings))
        }
        "update" => {
            let body = decode_body(call)?;
            let out = update(shared, user, info, &ns, &name, &t.sub, body, &o).await?;
            Ok(Reply::ok(out.code, out.object, out.warnings))
        }
        "patch" => {
            let kind = PatchKind::from_content_type(&call.content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {}", call.content_type),
                )
            })?;
            let out = patch(shared, user, info, &ns, &name, &t.sub, kind, &call.body, &o).await?;
            Ok(Reply::ok(out.code, out.object, out.warnings))
        }
        "delete" => {
            let mut o = o;
            o.delete_options = if call.body.is_empty() {
                json!({})
            } else {
                decode_body(call)?
            };
            if let Some(p) = q.get("propagationPolicy") {
                o.delete_options["propagationPolicy"] = json!(p);
            }
            if o.delete_options["dryRun"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                o.dry_run = true;
            }
            let out = delete(shared, user, info, &ns, &name, &o).await?;
            Ok(Reply::ok(out.code, out.object, out.warnings))
        }
        "deletecollection" => {
            let (l, f) = selectors(q)?;
            let mut o = o;
            o.delete_options = if call.body.is_empty() {
                json!({})
            } else {
                decode_body(call)?
            };
            if let Some(p) = q.get("propagationPolicy") {
                o.delete_options["propagationPolicy"] = json!(p);
            }
            o.collection = true;
            let items = list(shared, info, t.namespace.as_deref(), &l, &f);
            let mut deleted = Vec::new();
            let mut warnings = Vec::new();
            for item in items["items"].as_array().into_iter().flatten() {
                let n = meta_str(item, "name").to_string();
                let ins = meta_str(item, "namespace").to_string();
                match delete(shared, user, info, &ins, &n, &o).await {
                    Ok(out) => {
                        warnings.extend(out.warnings);
                        deleted.push(out.object);
                    }
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let rv = shared.store().rv().to_string();
            Ok(Reply::ok(
                200,
                json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                    "metadata": {"resourceVersion": rv}, "items": deleted}),
                warnings,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
