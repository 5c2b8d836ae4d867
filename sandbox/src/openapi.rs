//! Minimal OpenAPI documents, just enough for kubectl's default (`--validate=strict`) path: an
//! empty v2 document (protobuf: zero bytes is an empty message, so no client-side schema) and v3
//! documents whose PATCH operations carry `x-kubernetes-group-version-kind` and the
//! `fieldValidation` query parameter, so kubectl defers validation to the server.

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

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`.
pub fn v3_group_version(resources: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
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
        "components": {"schemas": {}},
    }))
}
