//! Resource-specific behaviour of the apiserver's registries: defaulting, what `create` stamps
//! (Job selectors, namespace labels, CRD conditions, initial status), status-subresource
//! semantics, Service ClusterIP and NodePort allocation, and validations beyond labels.

use crate::error::FieldError;
use crate::resources::ResourceInfo;
use crate::store::Store;
use crate::util::{as_object_mut, meta_mut, meta_str, now_rfc3339};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Knobs the rules need.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Inclusive node-port range.
    pub node_port_range: (u16, u16),
    /// First three octets of the ClusterIP range (e.g. `10.96.0`); addresses .1–.254 (then the
    /// next /24).
    pub cluster_ip_base: [u8; 2],
    /// Load-balancer address pool.
    pub lb_pool: Vec<String>,
}

fn set_default(m: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), v);
    }
}

fn pod_spec_defaults(spec: &mut Value) {
    let m = as_object_mut(spec);
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "schedulerName", json!("default-scheduler"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "securityContext", json!({}));
    for key in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                let cm = as_object_mut(c);
                let latest = cm
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| !i.contains(':') || i.ends_with(":latest"));
                set_default(
                    cm,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(cm, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(cm, "terminationMessagePolicy", json!("File"));
                set_default(cm, "resources", json!({}));
                if let Some(ports) = cm.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(as_object_mut(p), "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn template_defaults(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec_defaults(spec);
    }
}

/// Defaulting, as the apiserver does on decode (before admission).
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec_defaults(spec);
            }
        }
        ("", "services") => {
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
            if ty == "NodePort" || ty == "LoadBalancer" {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    let pm = as_object_mut(p);
                    set_default(pm, "protocol", json!("TCP"));
                    if let Some(port) = pm.get("port").cloned() {
                        set_default(pm, "targetPort", port);
                    }
                }
            }
        }
        ("", "secrets") => set_default(as_object_mut(obj), "type", json!("Opaque")),
        ("batch", "jobs") => {
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            let par_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
            let comp_set = spec.get("completions").is_some_and(|v| !v.is_null());
            if !par_set && !comp_set {
                spec.insert("completions".into(), json!(1));
            }
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "manualSelector", Value::Null);
            spec.remove("manualSelector");
            let failure_policy = spec.get("podFailurePolicy").is_some_and(|p| !p.is_null());
            let replacement = if failure_policy {
                "Failed"
            } else {
                "TerminatingOrFailed"
            };
            set_default(spec, "podReplacementPolicy", json!(replacement));
            template_defaults(obj);
        }
        ("batch", "cronjobs") => {
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            set_default(spec, "suspend", json!(false));
            if let Some(s) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec_defaults(s);
            }
        }
        ("", "replicationcontrollers") => {
            // SetDefaults_ReplicationController: an empty selector and empty object labels are
            // taken from the template's labels (so an RC carries its pods' routing labels
            // unless it names its own), and replicas defaults to 1.
            let tl = obj
                .pointer("/spec/template/metadata/labels")
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            if let Some(tl) = tl {
                let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
                let empty =
                    |v: Option<&Value>| v.and_then(Value::as_object).is_none_or(|m| m.is_empty());
                if empty(spec.get("selector")) {
                    spec.insert("selector".into(), tl.clone());
                }
                let meta = meta_mut(obj);
                if empty(meta.get("labels")) {
                    meta.insert("labels".into(), tl);
                }
            }
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            set_default(spec, "replicas", json!(1));
            template_defaults(obj);
        }
        ("apps", "deployments") | ("apps", "replicasets") => {
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            set_default(spec, "replicas", json!(1));
            if info.plural == "deployments" {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                // SetDefaults_Deployment: an empty strategy (kubectl create deployment sends
                // `strategy: {}`) is a RollingUpdate of 25%/25%.
                let strategy = as_object_mut(spec.entry("strategy").or_insert(json!({})));
                set_default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate" {
                    let rolling =
                        as_object_mut(strategy.entry("rollingUpdate").or_insert(json!({})));
                    set_default(rolling, "maxSurge", json!("25%"));
                    set_default(rolling, "maxUnavailable", json!("25%"));
                }
            }
            template_defaults(obj);
        }
        ("apps", "statefulsets") => {
            let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            template_defaults(obj);
        }
        ("apps", "daemonsets") => template_defaults(obj),
        _ => {}
    }
}

/// What `create` stamps after admission (the registry's PrepareForCreate), given the new uid.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    let name = meta_str(obj, "name").to_string();
    let uid = meta_str(obj, "uid").to_string();
    if info.status && info.custom {
        as_object_mut(obj).remove("status");
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            let meta = meta_mut(obj);
            let labels = as_object_mut(meta.entry("labels").or_insert(json!({})));
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            let root = as_object_mut(obj);
            root.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "pods") => {
            as_object_mut(obj).insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        ("", "services") => {
            as_object_mut(obj).insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("batch", "jobs") => {
            let has_selector = obj.pointer("/spec/selector").is_some_and(|v| !v.is_null());
            if !has_selector {
                if let Some(spec) = obj.get_mut("spec") {
                    as_object_mut(spec).insert(
                        "selector".into(),
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                    );
                }
                let tmeta = obj.pointer_mut("/spec/template").map(|t| {
                    as_object_mut(as_object_mut(t).entry("metadata").or_insert(json!({})))
                });
                if let Some(tmeta) = tmeta {
                    let labels = as_object_mut(tmeta.entry("labels").or_insert(json!({})));
                    labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                    labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
                    labels.insert("controller-uid".into(), json!(uid));
                    labels.insert("job-name".into(), json!(name));
                }
            }
            // SetDefaults_Job: a Job without labels of its own takes its template's. There they
            // are one Go map, so the selector labels generated just above show on both.
            let template_labels = obj
                .pointer("/spec/template/metadata/labels")
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            let meta = meta_mut(obj);
            let unlabelled = meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty());
            if let (true, Some(labels)) = (unlabelled, template_labels) {
                meta.insert("labels".into(), labels);
            }
            as_object_mut(obj).insert("status".into(), json!({}));
        }
        ("apps", _) | ("batch", "cronjobs") | ("policy", _) => {
            as_object_mut(obj).insert("status".into(), json!({}));
        }
        // ReplicationControllerStatus.replicas is not omitempty.
        ("", "replicationcontrollers") => {
            as_object_mut(obj).insert("status".into(), json!({"replicas": 0}));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => crd_status(obj),
        _ => {}
    }
}

fn crd_status(obj: &mut Value) {
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let now = now_rfc3339();
    as_object_mut(obj).insert(
        "status".into(),
        json!({
            "acceptedNames": names,
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        }),
    );
}

/// Whether `/status` of this resource takes the request's metadata (labels, annotations,
/// finalizers, ...) and only resets the spec. The apiserver's pod status strategy does
/// (`newPod.Spec = oldPod.Spec`, keeping only the old ownerReferences) — that is how the
/// kubelet relabels a pod through `pods/status` — and so does the Service status strategy
/// (`newService.Spec = oldService.Spec`). Other status strategies here keep all of the old object
/// but its status.
fn status_takes_metadata(info: &ResourceInfo) -> bool {
    info.is("", "pods") || info.is("", "services")
}

/// Merges an update per the status-subresource rules: the main resource keeps the old status,
/// `/status` keeps everything but status (pods and Services: but status and metadata).
pub fn merge_for_update(info: &ResourceInfo, sub: &str, old: &Value, new: Value) -> Value {
    let mut out = new;
    if sub == "status" {
        let status = out.get("status").cloned();
        let meta = out.get("metadata").cloned();
        out = old.clone();
        match status {
            Some(s) => as_object_mut(&mut out).insert("status".into(), s),
            None => as_object_mut(&mut out).remove("status"),
        };
        if status_takes_metadata(info) {
            let mut meta = meta.unwrap_or_else(|| json!({}));
            let m = as_object_mut(&mut meta);
            // The pod status strategy keeps the old ownerReferences ("old kubelets corrupt
            // them"); uid, names and timestamps are put back below as for every update.
            if info.plural == "pods" {
                match old.pointer("/metadata/ownerReferences") {
                    Some(r) => m.insert("ownerReferences".into(), r.clone()),
                    None => m.remove("ownerReferences"),
                };
            }
            as_object_mut(&mut out).insert("metadata".into(), meta);
        }
        // The pod status strategy backfills the QoS class a client's status left out.
        if info.is("", "pods") && out.pointer("/status/qosClass").is_none() {
            if let (Some(q), Some(st)) = (
                old.pointer("/status/qosClass").cloned(),
                out.get_mut("status").and_then(Value::as_object_mut),
            ) {
                st.insert("qosClass".into(), q);
            }
        }
    } else if info.status {
        match old.get("status") {
            Some(s) => as_object_mut(&mut out).insert("status".into(), s.clone()),
            None => as_object_mut(&mut out).remove("status"),
        };
    }
    // Fields the client may not change.
    let om = old.get("metadata").cloned().unwrap_or(json!({}));
    let nm = meta_mut(&mut out);
    for k in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "namespace",
        "name",
    ] {
        match om.get(k) {
            Some(v) => nm.insert(k.into(), v.clone()),
            None => nm.remove(k),
        };
    }
    if !nm.contains_key("managedFields") {
        if let Some(mf) = om.get("managedFields") {
            nm.insert("managedFields".into(), mf.clone());
        }
    }
    if info.is("", "namespaces") {
        let name = meta_str(old, "name").to_string();
        let labels = as_object_mut(meta_mut(&mut out).entry("labels").or_insert(json!({})));
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if info.is("apiextensions.k8s.io", "customresourcedefinitions") && sub.is_empty() {
        crd_status(&mut out);
    }
    out
}

fn spec_of(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// The allocation check of a create at commit, under the store's lock. `obj` carries what
/// [`service_allocate`] chose before admission; when a concurrent create has taken an address or
/// node port chosen then (not one the client asked for), they are chosen again, as the apiserver's
/// allocator never hands one out twice. `requested` is the Service before that first allocation.
pub fn service_commit(
    store: &Store,
    cfg: &RuleConfig,
    obj: &mut Value,
    requested: &Value,
) -> Result<(), Vec<FieldError>> {
    // On error `obj` is left as it was.
    if service_allocate(store, cfg, obj, None).is_ok() {
        return Ok(());
    }
    let asked = requested.get("spec");
    let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
    for k in ["clusterIP", "clusterIPs"] {
        match asked.and_then(|s| s.get(k)) {
            Some(v) => spec.insert(k.into(), v.clone()),
            None => spec.remove(k),
        };
    }
    let asked_ports = asked.and_then(|s| s.get("ports")).and_then(Value::as_array);
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let np = asked_ports
                .and_then(|a| a.get(i))
                .and_then(|p| p.get("nodePort"))
                .cloned();
            let pm = as_object_mut(p);
            match np {
                Some(v) => pm.insert("nodePort".into(), v),
                None => pm.remove("nodePort"),
            };
        }
    }
    service_allocate(store, cfg, obj, None)
}

/// Bumps `metadata.generation` when anything but metadata and status changed.
pub fn bump_generation(old: &Value, new: &mut Value) {
    let gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let next = if spec_of(old) != spec_of(new) {
        gen + 1
    } else {
        gen
    };
    meta_mut(new).insert("generation".into(), json!(next));
}

/// The lowest free cluster IP: `a.b.0.10` onwards, then `.1`–`.254` of each next /24. Walks the
/// store's sorted index of IPv4 cluster IPs alongside the candidates (integer steps, no clones).
fn lowest_free_cluster_ip(store: &Store, base: [u8; 2]) -> Option<String> {
    let at = |third: u8, fourth: u8| u32::from(Ipv4Addr::new(base[0], base[1], third, fourth));
    let mut used = store.used_ipv4(at(0, 0)..=at(255, 255)).peekable();
    for third in 0..=255u8 {
        for fourth in 1..=254u8 {
            if third == 0 && fourth < 10 {
                continue;
            }
            let cand = at(third, fourth);
            while used.next_if(|&u| u < cand).is_some() {}
            if used.peek() != Some(&cand) {
                return Some(Ipv4Addr::from(cand).to_string());
            }
        }
    }
    None
}

fn wants_node_ports(spec: &Value) -> bool {
    match spec["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

/// Service rules on create and update: ClusterIP (kept, allocated, or `None`), node ports (kept
/// from the old object when omitted, allocated in the range, collisions refused), type checks.
pub fn service_allocate(
    store: &Store,
    cfg: &RuleConfig,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let ns = meta_str(obj, "namespace").to_string();
    let name = meta_str(obj, "name").to_string();
    let spec_ptr = obj.pointer("/spec").cloned().unwrap_or(json!({}));
    let ty = spec_ptr["type"].as_str().unwrap_or("ClusterIP").to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        return Err(vec![FieldError::not_supported(
            "spec.type",
            &ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )]);
    }
    let ports = spec_ptr["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && spec_ptr["clusterIP"].as_str() != Some("None") {
        errs.push(FieldError::required("spec.ports", ""));
    }
    // ClusterIP
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut ip = spec_ptr["clusterIP"].as_str().unwrap_or("").to_string();
    if ip.is_empty() {
        if let Some(o) = &old_ip {
            ip = o.clone();
        }
    }
    if ty == "ExternalName" {
        ip.clear();
    } else if ip.is_empty() {
        match lowest_free_cluster_ip(store, cfg.cluster_ip_base) {
            Some(c) => ip = c,
            None => errs.push(FieldError::invalid_str(
                "spec.clusterIPs",
                "",
                "failed to allocate IP: range is full",
            )),
        }
    } else if ip != "None" && old_ip.as_deref() != Some(ip.as_str()) {
        let taken = store
            .cluster_ip_holders(&ip)
            .iter()
            .any(|(n, m)| (n, m) != (&ns, &name));
        if taken {
            errs.push(FieldError::invalid_raw(
                "spec.clusterIPs",
                format!("[]string{{\"{ip}\"}}"),
                format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ));
        }
    }
    // Node ports
    let want = wants_node_ports(&spec_ptr);
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Held by another Service (this one's own ports may be kept or moved).
    let used = |n: i64| {
        store
            .node_port_holders(n)
            .iter()
            .any(|(a, b)| (a, b) != (&ns, &name))
    };
    let (lo, hi) = (cfg.node_port_range.0 as i64, cfg.node_port_range.1 as i64);
    let mut new_ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let mut p = p.clone();
        let pm = as_object_mut(&mut p);
        if ports.len() > 1
            && pm
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
        if !want {
            if pm.get("nodePort").and_then(Value::as_i64).is_some() && old.is_none() {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            }
            pm.remove("nodePort");
            new_ports.push(p);
            continue;
        }
        let requested = pm.get("nodePort").and_then(Value::as_i64);
        let np = match requested {
            Some(n) => {
                if n < lo || n > hi {
                    errs.push(FieldError::invalid_raw(
                        format!("spec.ports[{i}].nodePort"),
                        n.to_string(),
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                } else if used(n) || seen.contains(&n) {
                    errs.push(FieldError::invalid_raw(
                        format!("spec.ports[{i}].nodePort"),
                        n.to_string(),
                        "provided port is already allocated",
                    ));
                }
                Some(n)
            }
            None => {
                let same = old_ports.iter().find(|op| {
                    (op.get("port") == pm.get("port")
                        && op.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == pm.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))
                        || (op.get("name").is_some() && op.get("name") == pm.get("name"))
                });
                match same
                    .and_then(|op| op.get("nodePort"))
                    .and_then(Value::as_i64)
                {
                    Some(n) if !seen.contains(&n) => Some(n),
                    _ => {
                        let span = (hi - lo + 1).max(1) as u64;
                        let start = crate::util::rand_u64() % span;
                        let free = (0..span)
                            .map(|k| lo + ((start + k) % span) as i64)
                            .find(|&c| !used(c) && !seen.contains(&c));
                        if free.is_none() {
                            errs.push(FieldError::invalid_raw(
                                format!("spec.ports[{i}].nodePort"),
                                "0".into(),
                                "range is full",
                            ));
                        }
                        free
                    }
                }
            }
        };
        if let Some(n) = np {
            seen.insert(n);
            pm.insert("nodePort".into(), json!(n));
        }
        new_ports.push(p);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let spec = as_object_mut(as_object_mut(obj).entry("spec").or_insert(json!({})));
    if !ports.is_empty() {
        spec.insert("ports".into(), Value::Array(new_ports));
    }
    if ty != "ExternalName" {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty != "LoadBalancer" {
        // A service that stops being a LoadBalancer loses its address.
        if let Some(st) = as_object_mut(obj).get_mut("status") {
            as_object_mut(st).insert("loadBalancer".into(), json!({}));
        }
    }
    Ok(())
}

/// The workload rule that the template's labels satisfy the selector (else the controller
/// would never see the pods it creates).
fn selector_matches_template(
    sel: &crate::selectors::LabelSelector,
    obj: &Value,
) -> Option<FieldError> {
    let tl = crate::util::string_map(obj.pointer("/spec/template/metadata/labels"));
    (!sel.matches(&tl)).then(|| {
        FieldError::invalid_raw(
            "spec.template.metadata.labels",
            serde_json::to_string(&tl).unwrap_or_default(),
            "`selector` does not match template `labels`",
        )
    })
}

/// Validation beyond labels and names (needs no store).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods")
            if obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty) =>
        {
            errs.push(FieldError::required("spec.containers", ""));
        }
        ("batch", "jobs") => {
            let rp = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            if rp != "Never" && rp != "OnFailure" {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    rp,
                    &["OnFailure", "Never"],
                ));
            }
            if obj.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed")
                && obj.pointer("/spec/completions").is_none_or(Value::is_null)
            {
                errs.push(FieldError::required(
                    "spec.completions",
                    "when completion mode is Indexed",
                ));
            }
            if obj
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                errs.push(FieldError::required("spec.template.spec.containers", ""));
            }
        }
        ("apps", "deployments") | ("apps", "statefulsets") | ("apps", "replicasets") => {
            let sel = crate::selectors::LabelSelector::from_object(obj.pointer("/spec/selector"));
            if obj.pointer("/spec/selector").is_none_or(Value::is_null) {
                errs.push(FieldError::required("spec.selector", ""));
            } else {
                errs.extend(selector_matches_template(&sel, obj));
            }
        }
        ("", "replicationcontrollers") => {
            // An RC's selector is a plain label map (matchLabels without the wrapper); after
            // defaulting it is only empty when the template has no labels either.
            let map = obj
                .pointer("/spec/selector")
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
            match map {
                None => errs.push(FieldError::required("spec.selector", "")),
                Some(m) => {
                    errs.extend(crate::validation::labels_errors("spec.selector", Some(m)));
                    let sel = crate::selectors::LabelSelector::from_object(Some(
                        &json!({"matchLabels": m}),
                    ));
                    errs.extend(selector_matches_template(&sel, obj));
                }
            }
            if obj.pointer("/spec/template").is_none_or(Value::is_null) {
                errs.push(FieldError::required("spec.template", ""));
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::GroupResource;

    fn cfg() -> RuleConfig {
        RuleConfig {
            node_port_range: (30000, 32767),
            cluster_ip_base: [10, 96],
            lb_pool: vec![],
        }
    }

    #[test]
    fn node_port_collision() {
        let mut store = Store::new(100);
        let gr = GroupResource::new("", "services");
        let mut a = json!({"metadata": {"name": "a", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        service_allocate(&store, &cfg(), &mut a, None).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
        store.put(&gr, a);
        let mut b = json!({"metadata": {"name": "b", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let errs = service_allocate(&store, &cfg(), &mut b, None).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let mut c = json!({"metadata": {"name": "c", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        service_allocate(&store, &cfg(), &mut c, None).unwrap();
        let np = c["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np) && np != 30080);
        assert_eq!(c["spec"]["clusterIP"], "10.96.0.11");
        // Update omitting nodePort keeps it.
        let old = c.clone();
        let mut upd = json!({"metadata": {"name": "c", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        service_allocate(&store, &cfg(), &mut upd, Some(&old)).unwrap();
        assert_eq!(upd["spec"]["ports"][0]["nodePort"].as_i64(), Some(np));
        assert_eq!(upd["spec"]["clusterIP"], "10.96.0.11");
        let mut headless = json!({"metadata": {"name": "h", "namespace": "n"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        service_allocate(&store, &cfg(), &mut headless, None).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn allocations_follow_puts_and_removes() {
        let mut store = Store::new(100);
        let gr = GroupResource::new("", "services");
        let svc = |name: &str, node_port: i64| {
            json!({"metadata": {"name": name, "namespace": "n"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}})
        };
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let mut s = svc(name, 30000 + i as i64);
            service_allocate(&store, &cfg(), &mut s, None).unwrap();
            assert_eq!(s["spec"]["clusterIP"], format!("10.96.0.{}", 10 + i));
            store.put(&gr, s);
        }
        // A removed Service frees its address and node port: the lowest free address is reused.
        store.remove(&gr, "n", "b");
        let mut d = svc("d", 30001);
        service_allocate(&store, &cfg(), &mut d, None).unwrap();
        assert_eq!(d["spec"]["clusterIP"], "10.96.0.11");
        store.put(&gr, d.clone());
        let mut e =
            json!({"metadata": {"name": "e", "namespace": "n"}, "spec": {"ports": [{"port": 80}]}});
        service_allocate(&store, &cfg(), &mut e, None).unwrap();
        assert_eq!(e["spec"]["clusterIP"], "10.96.0.13");
        // Another Service's address is refused; a Service keeps its own on update.
        let mut f = json!({"metadata": {"name": "f", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}});
        let errs = service_allocate(&store, &cfg(), &mut f, None).unwrap_err();
        assert!(errs[0]
            .to_string()
            .contains("provided IP is already allocated"));
        let mut d2 = svc("d", 30001);
        d2["spec"]["clusterIP"] = json!("10.96.0.11");
        service_allocate(&store, &cfg(), &mut d2, Some(&d)).unwrap();
        // An update that moves a node port releases the old one.
        let mut d3 = svc("d", 30005);
        service_allocate(&store, &cfg(), &mut d3, Some(&d)).unwrap();
        store.put(&gr, d3);
        let mut g = svc("g", 30001);
        service_allocate(&store, &cfg(), &mut g, None).unwrap();
        let mut h = svc("h", 30005);
        let errs = service_allocate(&store, &cfg(), &mut h, None).unwrap_err();
        assert!(errs[0]
            .to_string()
            .contains("provided port is already allocated"));
        // After the /24's last address comes the next /24.
        let mut big = Store::new(100);
        for fourth in 10..=254 {
            big.put(
                &gr,
                json!({"metadata": {"name": format!("s{fourth}"), "namespace": "n"},
                    "spec": {"clusterIP": format!("10.96.0.{fourth}")}}),
            );
        }
        let mut next = json!({"metadata": {"name": "next", "namespace": "n"}, "spec": {"ports": [{"port": 80}]}});
        service_allocate(&big, &cfg(), &mut next, None).unwrap();
        assert_eq!(next["spec"]["clusterIP"], "10.96.1.1");
    }

    #[test]
    fn commit_chooses_again_what_a_concurrent_create_took() {
        let mut store = Store::new(100);
        let gr = GroupResource::new("", "services");
        let asked = json!({"metadata": {"name": "a", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"name": "w", "port": 80}, {"name": "x", "port": 81, "nodePort": 30100}]}});
        let mut a = asked.clone();
        service_allocate(&store, &cfg(), &mut a, None).unwrap();
        let chosen = a["spec"]["ports"][0]["nodePort"].clone();
        // Another create commits first with the same address and node port.
        let mut b = json!({"metadata": {"name": "b", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": chosen}]}});
        service_allocate(&store, &cfg(), &mut b, None).unwrap();
        assert_eq!(b["spec"]["clusterIP"], a["spec"]["clusterIP"]);
        store.put(&gr, b);
        service_commit(&store, &cfg(), &mut a, &asked).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.11");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.11"]));
        assert_ne!(a["spec"]["ports"][0]["nodePort"], chosen);
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30100);
        // A node port the client asked for is refused, not moved.
        let mut c = json!({"metadata": {"name": "c", "namespace": "n"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30200}]}});
        let c_asked = c.clone();
        service_allocate(&store, &cfg(), &mut c, None).unwrap();
        store.put(
            &gr,
            json!({"metadata": {"name": "d", "namespace": "n"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30200}]}}),
        );
        let errs = service_commit(&store, &cfg(), &mut c, &c_asked).unwrap_err();
        assert!(errs[0]
            .to_string()
            .contains("provided port is already allocated"));
    }
}
