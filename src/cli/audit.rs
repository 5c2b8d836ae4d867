//! `portico audit`: gather objects from a cluster or a folder of manifests, run the pure checks
//! of [`crate::audit`], print the report. Only the gathering (files, API lists) lives here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::audit::report::Report;
use crate::audit::{audit, Inventory};
use crate::config::Config;
use crate::core::Policy;

/// Report every violation of Portico's guarantees and every drift, in a cluster or in manifests.
///
/// Checks (see docs/auditor.md): pods that ask for a tag but carry no routing label; routing
/// labels without Portico's identity stamp, or whose prefix is not the stamped user's; Services,
/// Ingresses and Exposures that select another user's route value; Services nobody can be said to
/// own; Exposures in conflict; Services that drifted from their owner; Services and Ingresses
/// managed by Portico whose owner is gone; identity keys in metadata that controllers copy
/// (a CronJob's jobTemplate, a workload's own); hand-written EndpointSlices and Endpoints into
/// routed Services or other users' pods; Ingresses on another user's host.
///
/// Exit code: 0 when there is no violation, 1 when there is (or, with --strict, any warning),
/// 2 when the audit could not run.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Audit the manifests in this file (any name), or in this folder and its subfolders
    /// (`.yaml`, `.yml`, `.json`), instead of a cluster; multi-document files and `List`s too.
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR")]
    pub dir: Option<PathBuf>,
    /// The kubeconfig for the cluster; default KUBECONFIG, then ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default its current context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Audit one namespace only; default all.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Portico's configuration (label keys, annotation domain, prefix map, identity mode): the
    /// one the cluster's Portico runs with. The defaults when absent.
    #[arg(long, env = "PORTICO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `table` for people, `json` for scripts, `policyreport` for wg-policy PolicyReports (YAML).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// The report's format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Policyreport,
}

/// Runs the audit; returns the text to print and the exit code.
pub fn run(args: &AuditArgs) -> anyhow::Result<(String, u8)> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let policy = Policy::new(config);
    let (source, inventory) = match &args.dir {
        Some(dir) => (
            format!("manifests {}", dir.display()),
            from_dir(dir, args.namespace.as_deref())?,
        ),
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(from_cluster(args))?
        }
    };
    let findings = audit(&policy, &inventory);
    let report = Report::new(
        source,
        inventory.counts(),
        inventory.unavailable.clone(),
        findings,
    );
    let text = match args.output {
        Output::Table => report.table(),
        Output::Json => report.json(),
        Output::Policyreport => report.policy_reports(),
    };
    Ok((text, report.exit_code(args.strict)))
}

/// Every manifest in the file `path`, or under the folder `path` in path order.
pub fn from_dir(path: &Path, namespace: Option<&str>) -> anyhow::Result<Inventory> {
    let mut inventory = Inventory::default();
    if path.is_dir() {
        add_dir(&mut inventory, path)?;
    } else {
        add_file(&mut inventory, path)?;
    }
    if let Some(ns) = namespace {
        let keep =
            |v: &serde_json::Value| v["metadata"]["namespace"].as_str().unwrap_or("default") == ns;
        for list in [
            &mut inventory.pods,
            &mut inventory.services,
            &mut inventory.ingresses,
            &mut inventory.exposures,
            &mut inventory.workloads,
            &mut inventory.endpoints,
        ] {
            list.retain(keep);
        }
    }
    Ok(inventory)
}

/// Files every manifest under `dir` into `inventory`, in path order.
fn add_dir(inventory: &mut Inventory, dir: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    collect(dir, &mut files).with_context(|| format!("cannot read folder {}", dir.display()))?;
    files.sort();
    for file in files {
        add_file(inventory, &file)?;
    }
    Ok(())
}

fn add_file(inventory: &mut Inventory, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    inventory.add_yaml(&text, &file.display().to_string())?;
    Ok(())
}

/// Files the manifests of each path (a file of any name, or a folder's `.yaml`, `.yml` and
/// `.json` files) into one inventory: what `portico review --cluster` reads.
pub fn from_paths(paths: &[PathBuf]) -> anyhow::Result<Inventory> {
    let mut inventory = Inventory::default();
    for path in paths {
        if path.is_dir() {
            add_dir(&mut inventory, path)?;
        } else {
            add_file(&mut inventory, path)?;
        }
    }
    Ok(inventory)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// What the audit lists: (group, version, kind, plural).
const LISTED: [(&str, &str, &str, &str); 13] = [
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("portico.dev", "v1alpha1", "Exposure", "exposures"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ("", "v1", "Endpoints", "endpoints"),
];

/// Lists everything the checks need from the cluster the kubeconfig names.
async fn from_cluster(args: &AuditArgs) -> anyhow::Result<(String, Inventory)> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .context("no usable kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config); use -f FILE_OR_DIR to audit manifests")?;
    let source = format!(
        "cluster {}",
        args.context
            .clone()
            .unwrap_or_else(|| config.cluster_url.to_string())
    );
    let client = kube::Client::try_from(config).context("cannot make a client for the cluster")?;
    let mut inventory = Inventory::default();
    for (group, version, kind, plural) in LISTED {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = match &args.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match list_all(&api).await {
            Ok(items) => {
                for mut item in items {
                    // Lists carry no kind on their items.
                    item["apiVersion"] = resource.api_version.clone().into();
                    item["kind"] = kind.into();
                    inventory.add(item);
                }
            }
            // Not served here (no Exposure CRD, a sandbox without the kind): said in the report.
            Err(kube::Error::Api(e)) if e.code == 404 => inventory.unavailable.push(kind.into()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {plural}")),
        }
    }
    Ok((source, inventory))
}

/// Every item of a list, page by page.
async fn list_all(api: &Api<DynamicObject>) -> Result<Vec<serde_json::Value>, kube::Error> {
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for item in page.items {
            out.push(serde_json::to_value(item).map_err(kube::Error::SerdeError)?);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
