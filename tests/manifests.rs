//! The deployable manifests say what the design promises: checked by reading them.

use std::path::PathBuf;

use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/base")
}

fn documents() -> Vec<Value> {
    let kustomization: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut docs = Vec::new();
    for file in kustomization["resources"].as_array().unwrap() {
        let text = std::fs::read_to_string(dir().join(file.as_str().unwrap())).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing"))
}

#[test]
fn every_manifest_file_is_listed_in_the_kustomization() {
    let kustomization = std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                kustomization.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn webhook_configurations_fail_closed_and_spare_the_system() {
    let docs = documents();
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = find(&docs, kind, "portico");
        for hook in config["webhooks"].as_array().unwrap() {
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["timeoutSeconds"], 3);
            let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(excluded["operator"], "NotIn");
            let values: Vec<&str> = excluded["values"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(values.contains(&"kube-system") && values.contains(&"portico-system"));
            for rule in hook["rules"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    let r = resource.as_str().unwrap();
                    assert!(
                        !["leases", "events", "*"].contains(&r),
                        "{kind} matches {r}"
                    );
                    // Endpoints are only validated (who may point at whose pods), never mutated.
                    assert!(
                        !(kind.starts_with("Mutating") && r.starts_with("endpoint")),
                        "{kind} matches {r}"
                    );
                }
                let ops: Vec<&str> = rule["operations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                if kind.starts_with("Mutating") {
                    assert_eq!(ops, ["CREATE", "UPDATE"]);
                } else {
                    assert!(
                        ops.contains(&"UPDATE") && !ops.contains(&"CONNECT"),
                        "{ops:?}"
                    );
                }
            }
            if kind.starts_with("Validating") {
                // The cluster's own components are never held up by Portico.
                let conditions = hook["matchConditions"].to_string();
                assert!(
                    conditions.contains("system:nodes")
                        && conditions.contains("system:serviceaccounts:kube-system"),
                    "{conditions}"
                );
            }
            if kind.starts_with("Mutating") {
                assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
                assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
            } else {
                assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
            }
        }
    }
    let mutating = find(&docs, "MutatingWebhookConfiguration", "portico");
    let resources: Vec<String> = mutating["webhooks"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
        })
        .collect();
    for r in [
        "pods",
        "replicationcontrollers",
        "jobs",
        "cronjobs",
        "statefulsets",
        "deployments",
        "replicasets",
        "daemonsets",
    ] {
        assert!(
            resources.iter().any(|x| x == r),
            "mutating webhook misses {r}"
        );
    }
    // Ownership: UPDATE and DELETE of every routed kind, pods/status, and the objects that point
    // at pods or Services without a selector.
    let validating = find(&docs, "ValidatingWebhookConfiguration", "portico");
    let rules = validating["webhooks"][0]["rules"].as_array().unwrap();
    let covers = |resource: &str, op: &str| {
        rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
                && r["operations"].as_array().unwrap().iter().any(|x| x == op)
        })
    };
    for r in [
        "services",
        "endpoints",
        "endpointslices",
        "ingresses",
        "exposures",
    ] {
        for op in ["CREATE", "UPDATE", "DELETE"] {
            assert!(covers(r, op), "validating webhook misses {op} {r}");
        }
    }
    // Stamped kinds: CREATE is the mutating webhook's; who changes or deletes them is validated.
    for r in [
        "pods",
        "replicationcontrollers",
        "jobs",
        "cronjobs",
        "statefulsets",
        "deployments",
        "replicasets",
        "daemonsets",
    ] {
        for op in ["UPDATE", "DELETE"] {
            assert!(covers(r, op), "validating webhook misses {op} {r}");
        }
        assert!(
            !covers(r, "CREATE"),
            "a {r} creation would call Portico twice"
        );
    }
    assert!(covers("pods/status", "UPDATE"));
    assert!(covers("pods/ephemeralcontainers", "UPDATE"));
}

#[test]
fn deployment_is_replicated_unprivileged_and_probed_on_the_ops_port() {
    let docs = documents();
    let deploy = find(&docs, "Deployment", "portico");
    assert!(deploy["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let ops = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ops")
        .unwrap();
    assert_eq!(ops["containerPort"], 9090);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "ops");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    find(&docs, "PodDisruptionBudget", "portico");
    let svc = find(&docs, "Service", "portico");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
}

#[test]
fn shipped_configuration_passes_config_check() {
    let docs = documents();
    let cm = find(&docs, "ConfigMap", "portico-config");
    let yaml = cm["data"]["config.yaml"].as_str().unwrap();
    portico::config::Config::from_yaml(yaml, "manifests/base/config.yaml").unwrap();
}

#[test]
fn rbac_grants_no_wildcards_and_no_secrets() {
    let docs = documents();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in doc["rules"].as_array().unwrap() {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "wildcard in {field}"
                );
            }
            assert!(!rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "secrets"));
        }
    }
}

#[test]
fn crd_manifest_is_generated_from_the_rust_types() {
    let on_disk = std::fs::read_to_string(dir().join("crd.yaml")).unwrap();
    let generated = portico::api::crd_yaml().unwrap();
    assert!(
        on_disk == generated,
        "manifests/base/crd.yaml is stale: run `portico crd > manifests/base/crd.yaml` (make manifests)"
    );
}

/// The service API's templates as the kustomize Component ships them: a ConfigMap holding every
/// file under descriptions/ (keys are the paths with `/` written `__`, since a key may not hold
/// `/`), and the Deployment patch that mounts it back as the same tree under
/// /etc/portico/descriptions, with the clients' token Secret at /etc/portico-api. Both files are
/// generated from descriptions/; `PORTICO_WRITE_MANIFESTS=1` (make manifests) rewrites them.
#[test]
fn the_service_api_component_ships_descriptions_and_mounts_them_and_the_tokens() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut stack = vec![root.join("descriptions")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut data = serde_json::Map::new();
    let mut items = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(root.join("descriptions"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            !rel.contains("__"),
            "{rel}: `__` would make the ConfigMap key ambiguous"
        );
        let key = rel.replace('/', "__");
        let text = std::fs::read_to_string(f)
            .unwrap_or_else(|e| panic!("{rel}: {e} (a ConfigMap holds text)"));
        data.insert(key.clone(), Value::String(text));
        items.push(serde_json::json!({"key": key, "path": rel}));
    }
    let labels = serde_json::json!({"app.kubernetes.io/name": "portico", "app.kubernetes.io/component": "service-api"});
    let configmap = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "portico-api-descriptions", "namespace": "portico-system", "labels": labels},
        "data": data,
    });
    let header = "# Generated from descriptions/ by `make manifests` (tests/manifests.rs): edit the templates there.\n";
    let configmap_text = format!("{header}{}", serde_yaml::to_string(&configmap).unwrap());
    let mount = serde_json::json!([
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "api-descriptions", "configMap": {"name": "portico-api-descriptions", "items": items}}},
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "api-clients", "secret": {"secretName": "portico-api-clients", "optional": true}}},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
         "value": {"name": "api-descriptions", "mountPath": "/etc/portico/descriptions", "readOnly": true}},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
         "value": {"name": "api-clients", "mountPath": "/etc/portico-api", "readOnly": true}},
    ]);
    let mount_text = format!("{header}{}", serde_yaml::to_string(&mount).unwrap());
    let component = root.join("manifests/service-api");
    let targets = [
        (component.join("descriptions.yaml"), configmap_text),
        (component.join("descriptions-mount.yaml"), mount_text),
    ];
    if std::env::var_os("PORTICO_WRITE_MANIFESTS").is_some() {
        for (path, text) in &targets {
            std::fs::write(path, text).unwrap();
        }
    }
    for (path, text) in &targets {
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            &on_disk == text,
            "{} is stale: run `make manifests` (PORTICO_WRITE_MANIFESTS=1 cargo test --test manifests)",
            path.display()
        );
    }
    // The Component uses both, and the patch applies to the base Deployment.
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(component.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let resources = kustomization["resources"].as_array().unwrap();
    assert!(
        resources.iter().any(|r| r == "descriptions.yaml"),
        "{resources:?}"
    );
    let patches = kustomization["patches"].as_array().unwrap();
    assert!(
        patches
            .iter()
            .any(|p| p["path"] == "descriptions-mount.yaml" && p["target"]["name"] == "portico"),
        "{patches:?}"
    );
    let mut deployment = documents()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_value(mount).unwrap();
    json_patch::patch(&mut deployment, &ops).unwrap();
    let mounts = &deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(mounts.as_array().unwrap().len(), 4, "{mounts}");
}
