//! # portico-sandbox
//!
//! A local, stateful Kubernetes API server for Portico's tests and `make run`: HTTP on loopback,
//! objects kept as JSON, list/watch with resourceVersions, server-side apply, the apiserver's own
//! rules where Portico relies on them, dynamic admission webhooks over HTTPS, the Job,
//! StatefulSet and Deployment controllers and a kubelet stand-in, static-token authentication
//! with impersonation, fault injection and request counters.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use portico_sandbox::{Sandbox, SandboxOptions};
//! let sb = Sandbox::start(SandboxOptions::default()).await?;
//! sb.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! let ns = sb.create_namespace("demo").await?;
//! // ... run the client under test against sb.url() ...
//! assert_eq!(sb.counters().writes_by("system:serviceaccount:portico-system:portico"), 0);
//! sb.shutdown().await;
//! # let _ = ns; Ok(()) }
//! ```

pub mod admission;
pub mod api;
pub mod auth;
pub mod controllers;
pub mod decode;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod images;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod rules;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod util;
pub mod validation;
pub mod watch;

use crate::api::{Call, Config, Reply, Shared, WriteOpts};
use crate::rules::RuleConfig;
use crate::server::ServerCtl;
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub use crate::auth::{TokenEntry, UserInfo};
pub use crate::faults::{Counters, Faults};

/// Username of Portico's service account in the default token table.
pub const PORTICO_USER: &str = "system:serviceaccount:portico-system:portico";

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Listen address (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Webhook services: `namespace/name` → `host:port`.
    pub service_endpoints: BTreeMap<String, String>,
    /// Events kept for watch resumption; older resourceVersions answer 410.
    pub watch_window: usize,
    /// Pending → Running delay of the kubelet stand-in.
    pub kubelet_delay: Duration,
    /// Pods owned by Jobs succeed after running this long (None: never by themselves).
    pub pod_succeed_after: Option<Duration>,
    /// Interval between watch bookmarks (when the client allows them).
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Load-balancer address pool (as MetalLB's IPAddressPool).
    pub lb_pool: Vec<String>,
    /// NodePort range (inclusive).
    pub node_port_range: (u16, u16),
    /// Token table (defaults: admin, user1, user2, portal, portico, kube-system controllers).
    pub tokens: Vec<TokenEntry>,
    /// Run the built-in controllers and kubelet stand-in.
    pub controllers: bool,
    /// Seed for generated names and uids (random when None).
    pub seed: Option<u64>,
    /// Extra namespaces to create at start.
    pub namespaces: Vec<String>,
    /// Images the kubelet stand-in pretends to run ([`images::pretends_to_run`]); pods of others
    /// stay Pending with `ErrImagePull`. Default `*`, every image (the CLI's is
    /// [`images::CLI_DEFAULT`]).
    pub images: Vec<String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_endpoints: BTreeMap::new(),
            watch_window: 10_000,
            kubelet_delay: Duration::from_millis(200),
            pod_succeed_after: None,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
            lb_pool: (10..=60).map(|i| format!("192.0.2.{i}")).collect(),
            node_port_range: (30000, 32767),
            tokens: auth::default_tokens(),
            controllers: true,
            seed: None,
            namespaces: Vec::new(),
            images: vec!["*".into()],
        }
    }
}

/// Entry point.
pub struct Sandbox;

impl Sandbox {
    /// Starts a sandbox (listener, seed objects, controllers).
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<RunningSandbox> {
        if let Some(s) = opts.seed {
            util::seed(s);
        }
        let cfg = Config {
            rules: RuleConfig {
                node_port_range: opts.node_port_range,
                cluster_ip_base: [10, 96],
                lb_pool: opts.lb_pool.clone(),
            },
            kubelet_delay: opts.kubelet_delay,
            pod_succeed_after: opts.pod_succeed_after,
            bookmark_interval: opts.bookmark_interval,
            default_watch_timeout: opts.default_watch_timeout,
            controllers: opts.controllers,
            node_name: "sandbox-node".into(),
            images: opts.images.clone(),
        };
        let shared = Arc::new(Shared::new(
            cfg,
            opts.watch_window,
            opts.tokens.clone(),
            opts.service_endpoints.clone(),
        ));
        let tls = tls::generate()?;
        let ctl = ServerCtl::bind(shared.clone(), opts.listen, tls)
            .await
            .with_context(|| format!("binding {}", opts.listen))?;
        let handle = SandboxHandle { ctl: ctl.clone() };
        let mut namespaces: Vec<String> =
            ["default", "kube-system", "kube-public", "kube-node-lease"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        namespaces.extend(opts.namespaces.iter().cloned());
        for ns in namespaces {
            handle.ensure_namespace(&ns, &BTreeMap::new()).await?;
        }
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "sandbox-node", "labels": {"kubernetes.io/hostname": "sandbox-node", "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "sandbox-node"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "nodeInfo": {"kubeletVersion": "v1.37.0-sandbox", "operatingSystem": "linux", "architecture": std::env::consts::ARCH}}});
        handle.apply_object("admin", node).await?;
        let controllers = opts
            .controllers
            .then(|| tokio::spawn(controllers::run(shared.clone())));
        Ok(RunningSandbox {
            handle,
            controllers,
        })
    }
}

/// A running sandbox. Dereferences to its [`SandboxHandle`].
pub struct RunningSandbox {
    handle: SandboxHandle,
    controllers: Option<JoinHandle<()>>,
}

impl std::ops::Deref for RunningSandbox {
    type Target = SandboxHandle;
    fn deref(&self) -> &SandboxHandle {
        &self.handle
    }
}

impl RunningSandbox {
    /// A clonable handle (counters, faults, restart, objects).
    pub fn handle(&self) -> SandboxHandle {
        self.handle.clone()
    }

    /// Stops the listener, every connection and the controllers.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        self.handle.ctl.shutdown().await;
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        self.handle.ctl.abort();
    }
}

/// A response from [`SandboxHandle::request`].
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub code: u16,
    /// Body (a Status on errors).
    pub body: Value,
    /// Admission warnings.
    pub warnings: Vec<String>,
}

/// A clonable handle on a running sandbox.
#[derive(Clone)]
pub struct SandboxHandle {
    ctl: Arc<ServerCtl>,
}

impl SandboxHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.ctl.shared
    }

    /// `https://127.0.0.1:<port>` (the server in the kubeconfig; its CA is [`Self::ca_pem`]).
    pub fn url(&self) -> String {
        format!("https://{}", self.ctl.addr)
    }

    /// `http://127.0.0.1:<port>`: the same server without TLS (control endpoints, curl).
    /// kubectl does not send tokens over plain HTTP; use [`Self::url`] with it.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.ctl.addr)
    }

    /// PEM of the CA that signed the sandbox's serving certificate.
    pub fn ca_pem(&self) -> String {
        self.ctl.tls.ca_pem.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// The token of a kubeconfig context (`admin`, `user1`, `user2`, `portal`, `portico`) or user.
    pub fn token(&self, context_or_user: &str) -> Option<String> {
        self.shared()
            .tokens
            .iter()
            .find(|t| {
                t.context.as_deref() == Some(context_or_user) || t.user.username == context_or_user
            })
            .map(|t| t.token.clone())
    }

    /// A kubeconfig with one context per token-table entry that names a context.
    pub fn kubeconfig_yaml(&self, current_context: &str) -> String {
        let mut users = Vec::new();
        let mut contexts = Vec::new();
        for t in &self.shared().tokens {
            let Some(ctx) = &t.context else { continue };
            users.push(json!({"name": ctx, "user": {"token": t.token}}));
            contexts.push(json!({"name": ctx, "context": {"cluster": "sandbox", "user": ctx, "namespace": "default"}}));
        }
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url(),
                "certificate-authority-data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.ca_pem())}}],
            "users": users,
            "contexts": contexts,
            "current-context": current_context,
        });
        serde_yaml::to_string(&cfg).unwrap_or_default()
    }

    /// Writes the kubeconfig (current context `admin`), creating parent directories.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, self.kubeconfig_yaml("admin"))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        api::lock(&self.shared().counters).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *api::lock(&self.shared().counters) = Counters::default();
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        api::lock(&self.shared().faults).faults.clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        api::lock(&self.shared().faults).faults = faults;
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Forgets the watch event log: every resourceVersion seen so far now answers 410.
    pub fn compact(&self) {
        self.shared().store().compact();
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().store().rv()
    }

    /// Sets where a webhook service (`namespace/name`) is reached (`host:port`).
    pub fn set_service_endpoint(&self, service: &str, addr: &str) {
        self.shared().set_endpoint(service, addr);
    }

    /// Closes the listener and all connections and watches, waits, listens again on the same
    /// port. State is kept.
    pub async fn restart(&self, downtime: Duration) -> anyhow::Result<()> {
        self.ctl.restart(downtime).await.context("restarting")
    }

    /// One object (None when absent), e.g. `object("", "pods", "ns", "name")`.
    pub fn object(&self, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.shared().store();
        st.get(&resources::GroupResource::new(group, resource), ns, name)
            .cloned()
    }

    /// Objects of a resource in a namespace (or all namespaces).
    pub fn objects(&self, group: &str, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let st = self.shared().store();
        st.list(&resources::GroupResource::new(group, resource), ns)
    }

    /// Calls `f` with each object of a resource in a namespace (or all namespaces), borrowed
    /// under the store's lock (for checks that read many objects often; `f` must not call back
    /// into the sandbox).
    pub fn for_each_object(
        &self,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        mut f: impl FnMut(&Value),
    ) {
        let st = self.shared().store();
        st.list_ref(&resources::GroupResource::new(group, resource), ns)
            .for_each(&mut f);
    }

    /// Fake container log lines of a pod.
    pub fn pod_logs(&self, ns: &str, name: &str) -> Vec<String> {
        api::lock(&self.shared().pod_logs)
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Appends fake container log lines to a pod.
    pub fn append_pod_log(&self, ns: &str, name: &str, lines: &[&str]) {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        self.shared().append_log(ns, name, &lines);
    }

    /// Fails a pod (phase Failed, Warning Event, log line).
    pub async fn fail_pod(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        controllers::fail_pod(
            self.shared(),
            ns,
            name,
            Some(reason.into()),
            Some(message.into()),
        )
        .await
        .map_err(anyhow::Error::from)
    }

    /// Kills a pod (phase Failed, reason Killed, `Killing` Event).
    pub async fn kill_pod(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        controllers::kill_pod(self.shared(), ns, name)
            .await
            .map_err(anyhow::Error::from)
    }

    /// Completes a pod (phase Succeeded).
    pub async fn succeed_pod(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        controllers::succeed_pod(self.shared(), ns, name)
            .await
            .map_err(anyhow::Error::from)
    }

    /// Runs a CronJob now (the sandbox schedules none): the Job `<cronjob>-<minutes since the
    /// epoch>` is created from `spec.jobTemplate` as the cronjob controller does, as
    /// `system:serviceaccount:kube-system:cronjob-controller` through admission, and returned.
    /// A second run within the same minute answers AlreadyExists; see [`Self::run_cronjob_at`].
    pub async fn run_cronjob(&self, ns: &str, name: &str) -> anyhow::Result<Value> {
        self.run_cronjob_at(ns, name, util::now_secs()).await
    }

    /// [`Self::run_cronjob`] for the scheduled time `scheduled_unix` (Unix seconds), which names
    /// the Job (`<cronjob>-<scheduled_unix / 60>`).
    pub async fn run_cronjob_at(
        &self,
        ns: &str,
        name: &str,
        scheduled_unix: i64,
    ) -> anyhow::Result<Value> {
        controllers::run_cronjob(self.shared(), ns, name, scheduled_unix)
            .await
            .map_err(|e| anyhow::anyhow!("CronJob {ns}/{name}: {}", e.message))
    }

    fn user(&self, who: &str) -> UserInfo {
        self.shared()
            .tokens
            .iter()
            .find(|t| t.context.as_deref() == Some(who) || t.user.username == who)
            .map(|t| t.user.clone())
            .unwrap_or_else(|| UserInfo::new(who, &[]))
    }

    /// Sends an API request as `user` (a context name or username) without HTTP. `path` may
    /// carry a query. PATCH bodies are sent with `content_type`.
    pub async fn request_raw(
        &self,
        user: &str,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let call = Call {
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET),
            path: p.to_string(),
            query: server::parse_query(q),
            content_type: content_type.into(),
            accept: "application/json".into(),
            user_agent: "sandbox-handle/v0".into(),
            body: body.into(),
            user: self.user(user),
        };
        match api::dispatch(self.shared(), call).await {
            Reply::Json {
                code,
                body,
                warnings,
                ..
            } => Response {
                code,
                body,
                warnings,
            },
            Reply::Text(t) => Response {
                code: 200,
                body: Value::String(t),
                warnings: vec![],
            },
            Reply::Watch(_) => Response {
                code: 400,
                body: error::ApiError::bad_request("watch is only served over HTTP").to_status(),
                warnings: vec![],
            },
        }
    }

    /// Sends a JSON API request as `user` (PATCH is a merge patch).
    pub async fn request(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let ct = if method.eq_ignore_ascii_case("PATCH") {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.request_raw(user, method, path, ct, bytes).await
    }

    /// Creates `obj` as `user`, or replaces it when it exists (like `kubectl apply`, without the
    /// three-way merge). Goes through admission.
    pub async fn apply_object(&self, user: &str, mut obj: Value) -> anyhow::Result<Value> {
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let info = self
            .shared()
            .store()
            .find_kind(&api_version, &kind)
            .with_context(|| format!("the sandbox does not serve {api_version} {kind}"))?;
        let ns = if info.namespaced {
            let n = util::meta_str(&obj, "namespace");
            if n.is_empty() {
                "default".to_string()
            } else {
                n.to_string()
            }
        } else {
            String::new()
        };
        let name = util::meta_str(&obj, "name").to_string();
        let u = self.user(user);
        let o = WriteOpts {
            field_manager: Some("sandbox".into()),
            ..Default::default()
        };
        let existing = self.object(&info.group, &info.plural, &ns, &name);
        let out = match existing {
            Some(cur) if !name.is_empty() => {
                util::meta_mut(&mut obj).insert(
                    "resourceVersion".into(),
                    json!(util::meta_str(&cur, "resourceVersion")),
                );
                api::update(self.shared(), &u, &info, &ns, &name, "", obj, &o).await
            }
            _ => api::create(self.shared(), &u, &info, &ns, obj, &o).await,
        };
        out.map(|o| o.object)
            .map_err(|e| anyhow::anyhow!("{kind} {name}: {}", e.message))
    }

    /// Applies every document of a (multi-document) YAML string, in order.
    pub async fn apply_yaml(&self, user: &str, yaml: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).context("parsing YAML")?;
            if v.is_null() {
                continue;
            }
            if v["kind"].as_str() == Some("List") {
                for item in v["items"].as_array().cloned().unwrap_or_default() {
                    out.push(self.apply_object(user, item).await?);
                }
                continue;
            }
            out.push(self.apply_object(user, v).await?);
        }
        Ok(out)
    }

    /// Creates (or labels) a namespace with the given labels.
    pub async fn ensure_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if let Some(cur) = self.object("", "namespaces", "", name) {
            obj = cur;
        }
        for (k, v) in labels {
            obj["metadata"]["labels"][k] = json!(v);
        }
        self.apply_object("admin", obj).await.map(|_| ())
    }

    /// Creates a namespace with a random suffix (`<prefix>-xxxxx`) and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", util::rand_suffix(6));
        self.ensure_namespace(&name, &BTreeMap::new()).await?;
        Ok(name)
    }
}
