//! Minimal OpenAPI documents, just enough for kubectl's default (`--validate=strict`) path: an
//! empty v2 document (protobuf: zero bytes is an empty message, so no client-side schema) and v3
//! documents whose PATCH operations carry `x-kubernetes-group-version-kind` and the
//! `fieldValidation` query parameter, so kubectl defers validation to the server. The v3 document
//! of a custom resource's group-version also carries its CRD's schema (descriptions included),
//! so that `kubectl explain exposure.spec` works; built-in kinds have none.

use crate::resources::ResourceInfo;
use serde_json::{json, Map, Value};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the list of group-version documents.
pub fn v3_root(resources: &[ResourceInfo]) -> Value {
    let mut paths = Map::new();
    for r in resources {
        let p = gv_path(&r.group, &r.version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=sandbox")}),
        );
    }
    json!({"paths": paths})
}

/// The schemas the CRDs in `crds` publish for `group`/`version`, as the apiserver publishes them:
/// named `<reversed group>.<version>.<Kind>`, with `x-kubernetes-group-version-kind`, and
/// `apiVersion`, `kind` and `metadata` added to the top level.
pub fn crd_schemas(crds: &[Value], group: &str, version: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for crd in crds.iter().filter(|c| c["spec"]["group"] == group) {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let versions = crd["spec"]["versions"].as_array().into_iter().flatten();
        for v in versions.filter(|v| v["name"] == version && v["served"] != false) {
            let Some(mut schema) = v.pointer("/schema/openAPIV3Schema").cloned() else {
                continue;
            };
            let props = schema
                .as_object_mut()
                .map(|o| o.entry("properties").or_insert_with(|| json!({})));
            if let Some(Value::Object(props)) = props {
                props.entry("apiVersion").or_insert_with(|| json!({"type": "string",
                    "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.entry("kind").or_insert_with(|| json!({"type": "string",
                    "description": "Kind is a string value representing the REST resource this object represents."}));
                props.entry("metadata").or_insert_with(|| json!({"type": "object",
                    "description": "Standard object's metadata: name, namespace, labels, annotations."}));
            }
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": kind}]);
            let reversed: Vec<&str> = group.split('.').rev().collect();
            out.insert(format!("{}.{version}.{kind}", reversed.join(".")), schema);
        }
    }
    out
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`, with the schemas of `crds` of that
/// group-version.
pub fn v3_group_version(
    resources: &[ResourceInfo],
    crds: &[Value],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mine: Vec<&ResourceInfo> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let prefix = gv_path(group, version);
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "force", "in": "query", "schema": {"type": "boolean"}}
    ]);
    let mut paths = Map::new();
    for r in mine {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let item = if r.namespaced {
            format!("/{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("/{prefix}/{}/{{name}}", r.plural)
        };
        let op = |id: &str| {
            json!({"operationId": format!("{id}{}", r.kind), "x-kubernetes-group-version-kind": gvk,
                "parameters": params, "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(item, json!({"get": op("read"), "put": op("replace"), "patch": op("patch"), "delete": op("delete")}));
        let coll = if r.namespaced {
            format!("/{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{prefix}/{}", r.plural)
        };
        paths.insert(coll, json!({"get": op("list"), "post": op("create")}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (portico-sandbox)", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": crd_schemas(crds, group, version)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crds_schema_is_published_for_its_group_version_only() {
        let crd = json!({"spec": {"group": "portico.dev", "names": {"kind": "Exposure"},
            "versions": [{"name": "v1alpha1", "served": true, "schema": {"openAPIV3Schema": {
                "type": "object", "description": "An Exposure keeps a Service…",
                "properties": {"spec": {"type": "object", "description": "What to expose"}}}}}]}});
        let schemas = crd_schemas(std::slice::from_ref(&crd), "portico.dev", "v1alpha1");
        let s = &schemas["dev.portico.v1alpha1.Exposure"];
        assert_eq!(s["description"], "An Exposure keeps a Service…");
        assert_eq!(s["properties"]["spec"]["description"], "What to expose");
        assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "Exposure");
        assert_eq!(s["properties"]["metadata"]["type"], "object");
        assert!(crd_schemas(std::slice::from_ref(&crd), "portico.dev", "v1").is_empty());
        assert!(crd_schemas(&[crd], "other.dev", "v1alpha1").is_empty());
    }
}
