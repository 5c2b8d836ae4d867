//! The offline commands: `review`, `mutate` and `config check`. No cluster, no certificates:
//! they run the same decisions the server runs, on files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::admission::{snapshot, Endpoint, Webhook};
use crate::config::Config;

/// Loads `--config FILE`, or the defaults.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// Reads a file, or stdin for `-` or no file.
fn read_input(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(p) if p != Path::new("-") => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            Ok(buf)
        }
    }
}

/// `portico review`: an AdmissionReview in, the response the server would give out. The rules
/// that need the cluster read the routed pods and Services in `cluster` (files or folders of
/// manifests); with none, a known but empty cluster: nothing is routed but what the review holds.
pub fn review(
    config: Option<&Path>,
    cluster: &[PathBuf],
    file: Option<&Path>,
    validate: bool,
) -> anyhow::Result<String> {
    let webhook = Webhook::new(load_config(config)?);
    let inventory = super::audit::from_paths(cluster)?;
    let routed = snapshot::routed(webhook.policy(), &inventory.pods, &inventory.services);
    let webhook = webhook.with_view(Arc::new(routed));
    let body = read_input(file)?;
    let endpoint = if validate {
        Endpoint::Validate
    } else {
        Endpoint::Mutate
    };
    let answer = webhook
        .answer(endpoint, &body)
        .map_err(|e| anyhow!("the server would answer HTTP 400: {e}"))?;
    String::from_utf8(answer.body).context("reply is not UTF-8")
}

/// Who `portico mutate` pretends to be.
pub struct Actor<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub namespace: &'a str,
}

/// The resource (plural) and group of the kinds Portico reviews, for the synthetic request.
fn resource_of(api_version: &str, kind: &str) -> (String, String) {
    let group = crate::core::object::group_of(api_version).to_string();
    let plural = match kind {
        "Pod" => "pods",
        "Service" => "services",
        "Job" => "jobs",
        "CronJob" => "cronjobs",
        "StatefulSet" => "statefulsets",
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "DaemonSet" => "daemonsets",
        "Exposure" => "exposures",
        other => return (group, format!("{}s", other.to_lowercase())),
    };
    (group, plural.to_string())
}

/// The outcome of mutating one manifest document.
pub enum Mutated {
    Stored {
        object: Value,
        warnings: Vec<String>,
    },
    Denied {
        name: String,
        message: String,
    },
}

/// Runs one manifest through the mutating then the validating decision, as the apiserver would
/// on CREATE.
pub fn mutate_object(
    webhook: &Webhook,
    actor: &Actor<'_>,
    mut object: Value,
) -> anyhow::Result<Mutated> {
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    if kind.is_empty() {
        bail!("a document has no kind");
    }
    let (group, resource) = resource_of(&api_version, &kind);
    let version = api_version
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(actor.namespace)
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .or(object["metadata"]["generateName"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut warnings = Vec::new();
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "portico-mutate",
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": resource},
                "namespace": namespace,
                "name": name,
                "operation": "CREATE",
                "userInfo": {"username": actor.user, "groups": actor.groups},
                "object": object,
                "dryRun": true,
            }
        });
        let body = serde_json::to_vec(&review)?;
        let answer = webhook
            .answer(endpoint, &body)
            .map_err(|e| anyhow!("{kind} {name}: {e}"))?;
        let reply: Value = serde_json::from_slice(&answer.body)?;
        let response = &reply["response"];
        if response["allowed"] != Value::Bool(true) {
            let message = response["status"]["message"]
                .as_str()
                .unwrap_or("denied")
                .to_string();
            return Ok(Mutated::Denied {
                name: format!("{kind} {name}"),
                message,
            });
        }
        if let Some(w) = response["warnings"].as_array() {
            warnings.extend(w.iter().filter_map(|w| w.as_str().map(str::to_string)));
        }
        if let Some(patch) = response["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
            let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
            json_patch::patch(&mut object, &patch).map_err(|e| anyhow!("{kind} {name}: {e}"))?;
        }
    }
    Ok(Mutated::Stored { object, warnings })
}

/// `portico mutate`: manifests (multi-document YAML) in, manifests as stored out. Denials are
/// collected; the caller exits non-zero when there is any.
pub fn mutate(
    config: Option<&Path>,
    actor: &Actor<'_>,
    file: Option<&Path>,
) -> anyhow::Result<(String, Vec<String>, Vec<String>)> {
    let webhook = Webhook::new(load_config(config)?);
    let input = read_input(file)?;
    let text = String::from_utf8(input).context("manifest is not UTF-8")?;
    let mut out = String::new();
    let mut warnings = Vec::new();
    let mut denials = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("document {} is not valid YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        match mutate_object(&webhook, actor, value)? {
            Mutated::Stored {
                object,
                warnings: w,
            } => {
                if !out.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&serde_yaml::to_string(&object)?);
                warnings.extend(w);
            }
            Mutated::Denied { name, message } => denials.push(format!("{name}: {message}")),
        }
    }
    Ok((out, warnings, denials))
}

/// `portico config check FILE`: Ok with a summary, or every problem explained.
pub fn config_check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path)?;
    // The mode as the file spells it (`user`), not as Rust names it.
    let mode = serde_yaml::to_string(&config.identity.mode).unwrap_or_default();
    let mut out = format!(
        "{}: ok (labels.job {}, labels.pod0 {}, annotationDomain {}, identity.mode {}, strict {})",
        path.display(),
        config.labels.job,
        config.labels.pod0,
        config.annotation_domain,
        mode.trim(),
        config.strict
    );
    for caution in config.cautions() {
        out.push_str(&format!("\nwarning: {caution}"));
    }
    Ok(out)
}
