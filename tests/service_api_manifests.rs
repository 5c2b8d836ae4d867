//! manifests/service-api/: the kustomize Component that adds the service API to an
//! installation. Checked by reading it: its Deployment patch applies to the base and yields a
//! `portico serve --api` command line, and its RBAC covers what the API does with the shipped
//! templates, with no wildcard and impersonation of one named user only.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn component() -> Value {
    docs(&root().join("manifests/service-api/kustomization.yaml")).remove(0)
}

#[test]
fn the_patch_turns_the_base_deployment_into_serve_with_api() {
    let k = component();
    assert_eq!(k["kind"], "Component");
    for r in k["resources"].as_array().unwrap() {
        assert!(root()
            .join("manifests/service-api")
            .join(r.as_str().unwrap())
            .exists());
    }
    let base = root().join("manifests/base/deployment.yaml");
    let mut deployment = docs(&base)
        .into_iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "portico")
        .expect("base Deployment");
    let patch = &k["patches"][0];
    assert_eq!(patch["target"]["name"], "portico");
    let ops: Value = serde_yaml::from_str(patch["patch"].as_str().unwrap()).unwrap();
    let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
    json_patch::patch(&mut deployment, &ops).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = std::iter::once("portico".to_string())
        .chain(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        )
        .collect();
    let cli = portico::cli::Cli::try_parse_from(&args).unwrap();
    match cli.command {
        portico::cli::Command::Serve(serve) => {
            assert!(serve.api);
            assert_eq!(serve.api_listen.port(), 8444);
        }
        other => panic!("not serve: {other:?}"),
    }
    assert!(container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "api" && p["containerPort"] == 8444));
    let service = docs(&root().join("manifests/service-api/service.yaml")).remove(0);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "api");
}

fn allows(rbac: &[Value], role: &str, group: &str, resource: &str, verb: &str) -> bool {
    rbac.iter()
        .filter(|d| {
            d["metadata"]["name"] == role && (d["kind"] == "ClusterRole" || d["kind"] == "Role")
        })
        .flat_map(|d| d["rules"].as_array().unwrap().iter())
        .any(|r| {
            let has = |field: &str, v: &str| r[field].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
}

#[test]
fn rbac_is_narrow_and_covers_the_shipped_templates() {
    let rbac = docs(&root().join("manifests/service-api/rbac.yaml"));
    for doc in rbac
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
            if rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "impersonate")
            {
                assert_eq!(rule["resourceNames"], serde_json::json!(["portico-api"]));
            }
            // Secrets are written and removed, never read back.
            if rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "secrets")
            {
                for verb in ["get", "list", "watch"] {
                    assert!(!rule["verbs"].as_array().unwrap().iter().any(|v| v == verb));
                }
            }
        }
    }
    let binding = rbac
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "portico-api-impersonator"
        })
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "portico");
    // Every kind in the shipped templates, plus the env Secret and the Exposure, can be created
    // and deleted; pods listed and read; events listed; logs read; records kept.
    let mut kinds = vec![
        ("".to_string(), "secrets".to_string()),
        ("portico.dev".to_string(), "exposures".to_string()),
    ];
    for client in std::fs::read_dir(root().join("descriptions")).unwrap() {
        for service in std::fs::read_dir(client.unwrap().path()).unwrap() {
            for option in std::fs::read_dir(service.unwrap().path()).unwrap() {
                let text =
                    std::fs::read_to_string(option.unwrap().path().join("service.yaml")).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                    let group = v["apiVersion"]
                        .as_str()
                        .unwrap()
                        .rsplit_once('/')
                        .map(|(g, _)| g)
                        .unwrap_or("")
                        .to_string();
                    kinds.push((
                        group,
                        format!("{}s", v["kind"].as_str().unwrap().to_lowercase()),
                    ));
                }
            }
        }
    }
    for (group, resource) in kinds {
        for verb in ["create", "delete"] {
            assert!(
                allows(&rbac, "portico-api", &group, &resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    assert!(allows(&rbac, "portico-api", "", "nodes", "get"));
    for verb in ["get", "create"] {
        assert!(allows(
            &rbac,
            "portico-api",
            "",
            "persistentvolumeclaims",
            verb
        ));
    }
    assert!(allows(&rbac, "portico-api", "", "pods", "list"));
    assert!(allows(&rbac, "portico-api", "", "pods", "get"));
    assert!(allows(&rbac, "portico-api", "", "events", "list"));
    assert!(allows(&rbac, "portico-api", "", "pods/log", "get"));
    for verb in ["get", "create", "update", "delete"] {
        assert!(allows(&rbac, "portico-api-records", "", "configmaps", verb));
    }
}
