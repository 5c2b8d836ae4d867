//! A whole Portico loop on loopback: the sandbox API server, Portico's webhook (real TLS, its
//! caBundle registered from `manifests/base/webhooks.yaml`) and Portico's provisioner, each reaching
//! the other through ordinary kubeconfigs and webhook configurations — no test-only code path.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use portico::admission::Webhook;
use portico::api::Exposure;
use portico::config::Config;
use portico::provisioner::view::LiveView;
use portico::server::certs::{mint, CertSpec};
use portico::server::{RunningServer, ServeOptions};
use portico_sandbox::{RunningSandbox, Sandbox, SandboxOptions};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[path = "../wait/mod.rs"]
mod wait;
#[allow(unused_imports)] // not every test binary waits
pub use wait::eventually;

/// The configuration every scenario runs with.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.provisioner.domain = "apps.test".into();
    c.provisioner.lease_seconds = 6;
    c
}

/// A running provisioner, stoppable.
pub struct RunningProvisioner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pub stats: Arc<portico::provisioner::Stats>,
}

impl RunningProvisioner {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub struct Loop {
    pub sandbox: RunningSandbox,
    pub webhook: RunningServer,
    pub config: Config,
    /// The webhook's watch-fed view of the cluster, when started with [`Loop::start_viewed`]
    /// (else the webhook knows nothing of the cluster, as `serve` without one).
    pub view: Option<LiveView>,
    _certs: tempfile::TempDir,
}

impl Loop {
    pub async fn start() -> Loop {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Loop {
        Self::start_audited(config, portico::server::audit_log::AuditLog::off()).await
    }

    /// [`Loop::start_with`], the webhook watching the cluster (as Portico's service account)
    /// for its view of routed pods and Services, as `portico serve` wires it.
    pub async fn start_viewed(config: Config) -> Loop {
        Self::start_inner(config, portico::server::audit_log::AuditLog::off(), true).await
    }

    /// [`Loop::start_with`], the webhook writing its audit records to `audit`.
    pub async fn start_audited(
        config: Config,
        audit: portico::server::audit_log::AuditLog,
    ) -> Loop {
        Self::start_inner(config, audit, false).await
    }

    async fn start_inner(
        config: Config,
        audit: portico::server::audit_log::AuditLog,
        viewed: bool,
    ) -> Loop {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
            .with_test_writer()
            .try_init();
        let sandbox = Sandbox::start(SandboxOptions {
            namespaces: vec!["portico-system".into(), "team".into()],
            kubelet_delay: Duration::from_millis(100),
            ..SandboxOptions::default()
        })
        .await
        .expect("sandbox starts");
        let certs = tempfile::tempdir().expect("tempdir");
        let bundle = mint(&CertSpec {
            service: "portico".into(),
            namespace: "portico-system".into(),
            hosts: vec!["127.0.0.1".into()],
            days: 1,
        })
        .expect("certs");
        let files = bundle.write_to(certs.path()).expect("write certs");
        let (cert_path, key_path) = (files.cert, files.key);
        let mut opts = ServeOptions::new(&cert_path, &key_path);
        opts.listen = "127.0.0.1:0".parse().expect("addr");
        opts.ops_listen = "127.0.0.1:0".parse().expect("addr");
        opts.audit = audit;
        let mut hook = Webhook::new(config.clone());
        let view = if viewed {
            let view = LiveView::spawn(
                client_of(&sandbox, "portico").await,
                Arc::new(portico::core::Policy::new(config.clone())),
                Arc::new(tokio::sync::Notify::new()),
            );
            hook = hook.with_view(Arc::new(view.clone()));
            Some(view)
        } else {
            None
        };
        let webhook = portico::server::start(opts, hook)
            .await
            .expect("webhook starts");
        sandbox.set_service_endpoint(
            "portico-system/portico",
            &webhook.webhook_addr().to_string(),
        );
        let admin = client_of(&sandbox, "admin").await;
        // The CRD, then the webhook configurations exactly as shipped, with the caBundle injected.
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        crds.create(&PostParams::default(), &Exposure::crd())
            .await
            .expect("crd");
        let ca_bundle = bundle.ca_bundle();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/base/webhooks.yaml"
        ))
        .expect("webhooks.yaml");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            for hook in v["webhooks"].as_array_mut().expect("webhooks") {
                hook["clientConfig"]["caBundle"] = Value::String(ca_bundle.clone());
            }
            let obj: DynamicObject = serde_json::from_value(v.clone()).expect("object");
            let (group, version) = ("admissionregistration.k8s.io", "v1");
            let kind = v["kind"].as_str().expect("kind");
            let ar = kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(group, version, kind),
                &format!("{}s", kind.to_lowercase()),
            );
            let api: Api<DynamicObject> = Api::all_with(admin.clone(), &ar);
            api.create(&PostParams::default(), &obj)
                .await
                .expect("webhook configuration");
        }
        Loop {
            sandbox,
            webhook,
            config,
            view,
            _certs: certs,
        }
    }

    pub async fn client(&self, context: &str) -> Client {
        client_of(&self.sandbox, context).await
    }

    /// Starts a provisioner as Portico's service account, with its own Lease identity.
    pub async fn provisioner(&self, identity: &str) -> RunningProvisioner {
        self.provisioner_observed(identity, Default::default())
            .await
    }

    /// [`Loop::provisioner`] reporting into `observe` (metrics, audit trail), as `portico serve`
    /// wires it.
    pub async fn provisioner_observed(
        &self,
        identity: &str,
        observe: portico::provisioner::metrics::Observe,
    ) -> RunningProvisioner {
        let client = self.client("portico").await;
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, _ready_rx) = watch::channel(false);
        let policy = Arc::new(portico::core::Policy::new(self.config.clone()));
        let stats = Arc::new(portico::provisioner::Stats::default());
        let task = tokio::spawn(portico::provisioner::run_observed(
            client,
            policy,
            identity.to_string(),
            stop_rx,
            ready_tx,
            stats.clone(),
            observe,
        ));
        RunningProvisioner { stop, task, stats }
    }

    /// Starts a provisioner that reads pods from the webhook's view's cache (as `portico serve`
    /// runs it in a replica that serves the webhook); needs [`Loop::start_viewed`].
    pub async fn provisioner_sharing(&self, identity: &str) -> RunningProvisioner {
        let view = self.view.clone().expect("a loop started with start_viewed");
        let client = self.client("portico").await;
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, _ready_rx) = watch::channel(false);
        let policy = Arc::new(portico::core::Policy::new(self.config.clone()));
        let stats = Arc::new(portico::provisioner::Stats::default());
        let task = tokio::spawn(portico::provisioner::run_sharing(
            client,
            policy,
            identity.to_string(),
            stop_rx,
            ready_tx,
            stats.clone(),
            Default::default(),
            view,
        ));
        RunningProvisioner { stop, task, stats }
    }

    /// Writes by Portico's service account so far, other than Lease renewals (which keep the
    /// leader's claim alive and are not reconciliation).
    pub fn portico_writes(&self) -> u64 {
        let counters = self.sandbox.counters();
        counters
            .counts
            .iter()
            .filter(|(k, _)| {
                k.user == portico_sandbox::PORTICO_USER
                    && ["create", "update", "patch", "delete", "deletecollection"]
                        .contains(&k.verb.as_str())
                    && !k.resource.starts_with("leases")
            })
            .map(|(_, n)| *n)
            .sum()
    }
}

pub async fn client_of(sandbox: &RunningSandbox, context: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&sandbox.kubeconfig_yaml(context)).expect("kubeconfig");
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}
