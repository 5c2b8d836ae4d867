//! Dynamic admission: finds the Mutating/ValidatingWebhookConfigurations that match a request
//! (rules, namespaceSelector, objectSelector), sends each webhook the AdmissionReview a
//! kube-apiserver sends over HTTPS (verifying `caBundle`), applies JSONPatch responses,
//! re-invokes `reinvocationPolicy: IfNeeded` webhooks, honours `failurePolicy`, `timeoutSeconds`,
//! `sideEffects` with dryRun, and turns denials into the apiserver's Status errors.

use crate::api::Shared;
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceInfo};
use crate::selectors::LabelSelector;
use crate::util::{labels, meta_str, new_uid, string_map};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What is being admitted.
#[derive(Debug, Clone)]
pub struct Attributes {
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: &'static str,
    /// The resource.
    pub info: ResourceInfo,
    /// Subresource ("" for none).
    pub subresource: String,
    /// Object name (may be empty on CREATE with generateName).
    pub name: String,
    /// Namespace ("" when cluster scoped).
    pub namespace: String,
    /// The old object (UPDATE, DELETE).
    pub old: Option<Value>,
    /// The requester.
    pub user: UserInfo,
    /// dryRun.
    pub dry_run: bool,
    /// CreateOptions / UpdateOptions / DeleteOptions.
    pub options: Value,
}

#[derive(Debug, Clone)]
struct Hook {
    config: String,
    webhook: Value,
}

impl Hook {
    fn name(&self) -> &str {
        self.webhook["name"].as_str().unwrap_or("")
    }
}

fn hooks(shared: &Shared, resource: &str) -> Vec<Hook> {
    let store = shared.store();
    let mut configs = store.list(
        &GroupResource::new("admissionregistration.k8s.io", resource),
        None,
    );
    configs.sort_by(|a, b| meta_str(a, "name").cmp(meta_str(b, "name")));
    configs
        .iter()
        .flat_map(|c| {
            let config = meta_str(c, "name").to_string();
            c["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |w| Hook {
                    config: config.clone(),
                    webhook: w,
                })
        })
        .collect()
}

fn contains(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v.as_str() == Some("*") || v.as_str() == Some(want))
    })
}

fn resource_matches(list: &Value, resource: &str, sub: &str) -> bool {
    list.as_array().is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|r| {
            let (rr, rs) = r.split_once('/').unwrap_or((r, ""));
            let res_ok = rr == "*" || rr == resource;
            let sub_ok = if rs.is_empty() {
                sub.is_empty()
            } else {
                rs == "*" || rs == sub
            };
            res_ok && sub_ok
        })
    })
}

fn rule_matches(rule: &Value, a: &Attributes) -> bool {
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => !a.info.namespaced,
        "Namespaced" => a.info.namespaced,
        _ => true,
    };
    scope_ok
        && contains(&rule["operations"], a.operation)
        && contains(&rule["apiGroups"], &a.info.group)
        && contains(&rule["apiVersions"], &a.info.version)
        && resource_matches(&rule["resources"], &a.info.plural, &a.subresource)
}

fn hook_matches(
    hook: &Value,
    a: &Attributes,
    object: Option<&Value>,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let rules_ok = hook["rules"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, a)));
    if !rules_ok {
        return false;
    }
    let ns_sel = LabelSelector::from_object(hook.get("namespaceSelector"));
    let ns_ok = if a.info.is("", "namespaces") {
        [object, a.old.as_ref()]
            .into_iter()
            .flatten()
            .any(|o| ns_sel.matches_object(o))
    } else if a.info.namespaced {
        ns_labels.is_none_or(|l| ns_sel.matches(l))
    } else {
        true
    };
    let obj_sel = LabelSelector::from_object(hook.get("objectSelector"));
    let obj_ok = [object, a.old.as_ref()]
        .into_iter()
        .flatten()
        .any(|o| obj_sel.matches_object(o))
        || (object.is_none() && a.old.is_none());
    ns_ok && obj_ok
}

fn review(a: &Attributes, object: Option<&Value>, uid: &str) -> Value {
    let gvk = json!({"group": a.info.group, "version": a.info.version, "kind": a.info.kind});
    let gvr = json!({"group": a.info.group, "version": a.info.version, "resource": a.info.plural});
    let mut req = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": a.operation,
        "userInfo": a.user,
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": a.old.clone().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": a.options,
    });
    if !a.subresource.is_empty() {
        req["subResource"] = json!(a.subresource);
        req["requestSubResource"] = json!(a.subresource);
    }
    if !a.name.is_empty() {
        req["name"] = json!(a.name);
    }
    if !a.namespace.is_empty() {
        req["namespace"] = json!(a.namespace);
    }
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req})
}

/// Failure to reach or understand a webhook.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("failed to call webhook: Post \"{url}\": {msg}")]
    Transport { url: String, msg: String },
    #[error("received invalid webhook response: {0}")]
    Invalid(String),
}

struct Target {
    url: String,
    connect: String,
    server_name: String,
    path: String,
}

fn target(shared: &Shared, cc: &Value, timeout: u64) -> Result<Target, CallError> {
    if let Some(url) = cc["url"].as_str() {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| CallError::Transport {
                url: url.into(),
                msg: "webhook URL must use https".into(),
            })?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').unwrap_or((h, ""));
            (h.to_string(), p.trim_start_matches(':').to_string())
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.to_string()),
                None => (hostport.to_string(), String::new()),
            }
        };
        let port = if port.is_empty() { "443".into() } else { port };
        let connect = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        return Ok(Target {
            url: format!("{url}{sep}timeout={timeout}s"),
            connect,
            server_name: host,
            path: format!("{path}{sep}timeout={timeout}s"),
        });
    }
    let svc = &cc["service"];
    let ns = svc["namespace"].as_str().unwrap_or_default();
    let name = svc["name"].as_str().unwrap_or_default();
    let port = svc["port"].as_i64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/");
    let path = format!("{path}?timeout={timeout}s");
    let host = format!("{name}.{ns}.svc");
    let url = format!("https://{host}:{port}{path}");
    let connect = shared
        .endpoint(&format!("{ns}/{name}"))
        .ok_or_else(|| CallError::Transport {
            url: url.clone(),
            msg: format!("service \"{name}\" not found"),
        })?;
    Ok(Target {
        url,
        connect,
        server_name: host,
        path,
    })
}

async fn post(t: &Target, ca_bundle: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle.trim())
        .map_err(|e| format!("invalid caBundle: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("invalid caBundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name =
        ServerName::try_from(t.server_name.clone()).map_err(|e| format!("bad host: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(&t.connect)
        .await
        .map_err(|e| format!("dial tcp {}: connect: {e}", t.connect))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method("POST")
        .uri(&t.path)
        .header("host", &t.server_name)
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .header("user-agent", "kube-apiserver-admission")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with status {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    Ok(bytes.to_vec())
}

async fn call(shared: &Shared, hook: &Hook, body: &Value, uid: &str) -> Result<Value, CallError> {
    let w = &hook.webhook;
    let timeout = w["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30);
    let versions_ok = w["admissionReviewVersions"]
        .as_array()
        .is_none_or(|a| a.iter().any(|v| v.as_str() == Some("v1")));
    if !versions_ok {
        return Err(CallError::Invalid(
            "webhook does not accept v1 AdmissionReview".into(),
        ));
    }
    let cc = &w["clientConfig"];
    let t = target(shared, cc, timeout)?;
    let ca = cc["caBundle"].as_str().unwrap_or("");
    let payload = serde_json::to_vec(body).map_err(|e| CallError::Invalid(e.to_string()))?;
    let bytes =
        match tokio::time::timeout(Duration::from_secs(timeout), post(&t, ca, payload)).await {
            Ok(Ok(b)) => b,
            Ok(Err(msg)) => return Err(CallError::Transport { url: t.url, msg }),
            Err(_) => {
                return Err(CallError::Transport {
                    url: t.url,
                    msg: "context deadline exceeded".into(),
                })
            }
        };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| CallError::Invalid(e.to_string()))?;
    let resp = v
        .get("response")
        .cloned()
        .ok_or_else(|| CallError::Invalid("webhook response was absent".into()))?;
    if resp["uid"].as_str() != Some(uid) {
        return Err(CallError::Invalid(format!(
            "expected response.uid=\"{uid}\", got \"{}\"",
            resp["uid"].as_str().unwrap_or("")
        )));
    }
    Ok(resp)
}

fn denial(name: &str, resp: &Value) -> ApiError {
    let status = &resp["status"];
    let mut code = status["code"].as_u64().unwrap_or(0) as u16;
    if code < 400 {
        code = 400;
    }
    let denied = format!("admission webhook \"{name}\" denied the request");
    let msg = status["message"].as_str().unwrap_or("");
    let reason = status["reason"].as_str().unwrap_or("");
    let message = if !msg.is_empty() {
        format!("{denied}: {msg}")
    } else if !reason.is_empty() {
        format!("{denied}: {reason}")
    } else {
        format!("{denied} without explanation")
    };
    let mut e = ApiError::new(code, reason, message);
    if let Some(d) = status.get("details") {
        e.details = Some(d.clone());
    }
    e
}

fn dry_run_unsupported(hook: &Hook) -> Option<ApiError> {
    let se = hook.webhook["sideEffects"].as_str().unwrap_or("Unknown");
    (se != "None" && se != "NoneOnDryRun").then(|| {
        ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook.name()
        ))
    })
}

fn exempt(info: &ResourceInfo) -> bool {
    info.group == "admissionregistration.k8s.io"
}

fn namespace_labels(shared: &Shared, a: &Attributes) -> Option<BTreeMap<String, String>> {
    if !a.info.namespaced || a.namespace.is_empty() {
        return None;
    }
    let store = shared.store();
    store.namespace(&a.namespace).map(labels)
}

enum Outcome {
    Continue,
    Stop(ApiError),
}

async fn run_one(
    shared: &Shared,
    hook: &Hook,
    a: &Attributes,
    object: &mut Option<Value>,
    mutating: bool,
    warnings: &mut Vec<String>,
) -> Outcome {
    if a.dry_run {
        if let Some(e) = dry_run_unsupported(hook) {
            return Outcome::Stop(e);
        }
    }
    let uid = new_uid();
    let body = review(a, object.as_ref(), &uid);
    tracing::debug!(webhook = hook.name(), config = %hook.config, op = a.operation, "calling webhook");
    let resp = match call(shared, hook, &body, &uid).await {
        Ok(r) => r,
        Err(err) => {
            let ignore = hook.webhook["failurePolicy"].as_str() == Some("Ignore");
            tracing::info!(webhook = hook.name(), %err, ignore, "webhook call failed");
            if ignore {
                return Outcome::Continue;
            }
            return Outcome::Stop(ApiError::internal(format!(
                "failed calling webhook \"{}\": {err}",
                hook.name()
            )));
        }
    };
    for w in resp["warnings"].as_array().into_iter().flatten() {
        if let Some(s) = w.as_str() {
            warnings.push(s.to_string());
        }
    }
    if resp["allowed"].as_bool() != Some(true) {
        return Outcome::Stop(denial(hook.name(), &resp));
    }
    if mutating {
        if let (Some(p), Some(obj)) = (resp["patch"].as_str(), object.as_mut()) {
            if resp["patchType"].as_str().unwrap_or("JSONPatch") != "JSONPatch" {
                return Outcome::Stop(ApiError::internal(format!(
                    "failed calling webhook \"{}\": unsupported patch type",
                    hook.name()
                )));
            }
            let patched = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
                .and_then(|ops| crate::patch::json_patch(obj, &ops));
            match patched {
                Ok(v) => *obj = v,
                Err(e) => {
                    return Outcome::Stop(ApiError::internal(format!(
                        "failed calling webhook \"{}\": {e}",
                        hook.name()
                    )))
                }
            }
        }
    }
    Outcome::Continue
}

/// Runs the mutating webhooks on `object` (in place); returns their warnings.
pub async fn mutate(
    shared: &Shared,
    a: &Attributes,
    object: &mut Option<Value>,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if exempt(&a.info) {
        return Ok(warnings);
    }
    let ns_labels = namespace_labels(shared, a);
    let all = hooks(shared, "mutatingwebhookconfigurations");
    // (hook index, object right after it ran)
    let mut ran: Vec<(usize, Option<Value>)> = Vec::new();
    for (i, hook) in all.iter().enumerate() {
        if !hook_matches(&hook.webhook, a, object.as_ref(), ns_labels.as_ref()) {
            continue;
        }
        if let Outcome::Stop(e) = run_one(shared, hook, a, object, true, &mut warnings).await {
            return Err(e);
        }
        ran.push((i, object.clone()));
    }
    let again: Vec<usize> = ran
        .iter()
        .filter(|(i, after)| {
            all[*i].webhook["reinvocationPolicy"].as_str() == Some("IfNeeded") && after != object
        })
        .map(|(i, _)| *i)
        .collect();
    for i in again {
        let hook = &all[i];
        if !hook_matches(&hook.webhook, a, object.as_ref(), ns_labels.as_ref()) {
            continue;
        }
        if let Outcome::Stop(e) = run_one(shared, hook, a, object, true, &mut warnings).await {
            return Err(e);
        }
    }
    Ok(warnings)
}

/// Runs the validating webhooks; returns their warnings.
pub async fn validate(
    shared: &Shared,
    a: &Attributes,
    object: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if exempt(&a.info) {
        return Ok(warnings);
    }
    let ns_labels = namespace_labels(shared, a);
    let mut obj = object.cloned();
    for hook in hooks(shared, "validatingwebhookconfigurations") {
        if !hook_matches(&hook.webhook, a, obj.as_ref(), ns_labels.as_ref()) {
            continue;
        }
        if let Outcome::Stop(e) = run_one(shared, &hook, a, &mut obj, false, &mut warnings).await {
            return Err(e);
        }
    }
    Ok(warnings)
}

/// The `options` object sent for an operation.
pub fn options(
    operation: &str,
    field_manager: Option<&str>,
    dry_run: bool,
    extra: Option<&Value>,
) -> Value {
    let kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        _ => "ConnectOptions",
    };
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if let Some(fm) = field_manager {
        if operation != "DELETE" {
            o["fieldManager"] = json!(fm);
        }
    }
    if dry_run {
        o["dryRun"] = json!(["All"]);
    }
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                o[k] = v.clone();
            }
        }
    }
    o
}

/// Labels of an object's namespace, for callers outside this module.
pub fn labels_of_namespace(shared: &Shared, ns: &str) -> BTreeMap<String, String> {
    shared
        .store()
        .namespace(ns)
        .map(|n| string_map(n.pointer("/metadata/labels")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(op: &'static str, plural: &str, sub: &str) -> Attributes {
        let info = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == plural)
            .unwrap();
        Attributes {
            operation: op,
            info,
            subresource: sub.into(),
            name: String::new(),
            namespace: "n".into(),
            old: None,
            user: UserInfo::new("u", &[]),
            dry_run: false,
            options: json!({}),
        }
    }

    #[test]
    fn rule_matching() {
        let hook = json!({"rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
            "objectSelector": {}});
        let pod = json!({"metadata": {"labels": {"a": "b"}}});
        let ns: BTreeMap<String, String> =
            [("kubernetes.io/metadata.name".to_string(), "n".to_string())].into();
        assert!(hook_matches(
            &hook,
            &attrs("CREATE", "pods", ""),
            Some(&pod),
            Some(&ns)
        ));
        assert!(!hook_matches(
            &hook,
            &attrs("DELETE", "pods", ""),
            Some(&pod),
            Some(&ns)
        ));
        assert!(!hook_matches(
            &hook,
            &attrs("UPDATE", "pods", "status"),
            Some(&pod),
            Some(&ns)
        ));
        let sys: BTreeMap<String, String> = [(
            "kubernetes.io/metadata.name".to_string(),
            "kube-system".to_string(),
        )]
        .into();
        assert!(!hook_matches(
            &hook,
            &attrs("CREATE", "pods", ""),
            Some(&pod),
            Some(&sys)
        ));
        let star = json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]});
        assert!(hook_matches(
            &star,
            &attrs("UPDATE", "pods", "status"),
            Some(&pod),
            None
        ));
        let sel = json!({"rules": star["rules"], "objectSelector": {"matchLabels": {"a": "c"}}});
        assert!(!hook_matches(
            &sel,
            &attrs("CREATE", "pods", ""),
            Some(&pod),
            None
        ));
    }

    #[test]
    fn denial_wording() {
        let e = denial(
            "pods.portico.dev",
            &json!({"allowed": false, "status": {"code": 403, "message": "no"}}),
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "admission webhook \"pods.portico.dev\" denied the request: no"
        );
        let e = denial("x", &json!({"allowed": false}));
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "admission webhook \"x\" denied the request without explanation"
        );
    }
}
