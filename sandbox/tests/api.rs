//! REST semantics: CRUD, Status errors, selectors, patches, server-side apply, dryRun, status
//! subresource, CRDs, garbage collection, the apiserver's rules and authentication.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn crud_and_status_errors() {
    let sb = start().await;
    let ns = sb.create_namespace("crud").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
    let r = post(&sb, "admin", &base, cm.clone()).await;
    assert_eq!(r.code, 201);
    assert_eq!(r.body["metadata"]["namespace"], ns.as_str());
    let rv = r.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!r.body["metadata"]["uid"].as_str().unwrap().is_empty());
    // AlreadyExists
    let r = post(&sb, "admin", &base, cm.clone()).await;
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "AlreadyExists");
    assert_eq!(r.body["message"], "configmaps \"a\" already exists");
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Failure");
    // NotFound
    let r = get(&sb, &format!("{base}/nope")).await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["message"], "configmaps \"nope\" not found");
    assert_eq!(r.body["details"]["name"], "nope");
    let r = get(&sb, "/apis/apps/v1/namespaces/x/deployments/nope").await;
    assert_eq!(r.body["message"], "deployments.apps \"nope\" not found");
    // PUT with the right rv, then a stale one.
    let mut upd = cm.clone();
    upd["metadata"]["resourceVersion"] = json!(rv);
    upd["data"]["k"] = json!("v2");
    let r = http(
        &sb,
        "admin",
        "PUT",
        &format!("{base}/a"),
        "application/json",
        Some(upd.clone()),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["data"]["k"], "v2");
    let r = http(
        &sb,
        "admin",
        "PUT",
        &format!("{base}/a"),
        "application/json",
        Some(upd),
    )
    .await;
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "Conflict");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));
    // generateName
    let r = post(
        &sb,
        "admin",
        &base,
        json!({"metadata": {"generateName": "gen-"}}),
    )
    .await;
    assert_eq!(r.code, 201);
    let name = r.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    // missing name
    let r = post(&sb, "admin", &base, json!({"metadata": {}})).await;
    assert_eq!(r.code, 422);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("name or generateName is required"));
    // namespace must exist
    let r = post(&sb, "admin", "/api/v1/namespaces/missing-ns/configmaps", cm).await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["message"], "namespaces \"missing-ns\" not found");
    // list and delete
    let r = get(&sb, &base).await;
    assert_eq!(r.body["kind"], "ConfigMapList");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = http(
        &sb,
        "admin",
        "DELETE",
        &format!("{base}/a"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(get(&sb, &format!("{base}/a")).await.code, 404);
    sb.shutdown().await;
}

#[tokio::test]
async fn selectors_filter_lists() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("sel").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/pods");
    for (n, l) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web"})),
        ("c", json!({"app": "db"})),
    ] {
        assert_eq!(post(&sb, "admin", &base, pod(n, l)).await.code, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |s: &str| {
        format!(
            "{base}?labelSelector={}",
            s.replace(' ', "+").replace('=', "%3D").replace(',', "%2C")
        )
    };
    assert_eq!(names(&get(&sb, &q("app=web")).await.body), ["a", "b"]);
    assert_eq!(names(&get(&sb, &q("app==web,tier")).await.body), ["a"]);
    assert_eq!(names(&get(&sb, &q("app!=web")).await.body), ["c"]);
    assert_eq!(names(&get(&sb, &q("app in (db,x)")).await.body), ["c"]);
    assert_eq!(
        names(&get(&sb, &q("app notin (db)")).await.body),
        ["a", "b"]
    );
    assert_eq!(names(&get(&sb, &q("!tier")).await.body), ["b", "c"]);
    let r = get(&sb, &format!("{base}?fieldSelector=metadata.name%3Db")).await;
    assert_eq!(names(&r.body), ["b"]);
    let r = get(&sb, &format!("{base}?fieldSelector=status.phase%3DPending")).await;
    assert_eq!(names(&r.body).len(), 3);
    let r = get(
        &sb,
        &format!("/api/v1/pods?fieldSelector=metadata.namespace%3D{ns}"),
    )
    .await;
    assert_eq!(names(&r.body).len(), 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn patches_apply_and_dry_run() {
    let sb = start().await;
    let ns = sb.create_namespace("patch").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    post(
        &sb,
        "admin",
        &base,
        json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
    )
    .await;
    let url = format!("{base}/c");
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/merge-patch+json",
        json!({"data": {"b": "2"}}),
    )
    .await;
    assert_eq!(r.body["data"], json!({"a": "1", "b": "2"}));
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/data/a"}]),
    )
    .await;
    assert_eq!(r.body["data"], json!({"b": "2"}));
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/strategic-merge-patch+json",
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(r.body["metadata"]["labels"]["x"], "y");
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/json-patch+json",
        json!([{"op": "test", "path": "/data/b", "value": "9"}]),
    )
    .await;
    assert_eq!(r.code, 422);
    // Server-side apply: create, then conflict with another manager, then force.
    let sa = format!("{base}/applied?fieldManager=portico");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"}});
    let r = patch(
        &sb,
        "admin",
        &sa,
        "application/apply-patch+yaml",
        cfg.clone(),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["metadata"]["managedFields"][0]["manager"], "portico");
    assert_eq!(r.body["metadata"]["managedFields"][0]["operation"], "Apply");
    let rv = r.body["metadata"]["resourceVersion"].clone();
    // Re-applying the same thing writes nothing.
    let r = patch(
        &sb,
        "admin",
        &sa,
        "application/apply-patch+yaml",
        cfg.clone(),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["metadata"]["resourceVersion"], rv);
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "other"}});
    let r = patch(
        &sb,
        "admin",
        &format!("{base}/applied?fieldManager=intruder"),
        "application/apply-patch+yaml",
        other.clone(),
    )
    .await;
    assert_eq!(r.code, 409);
    assert_eq!(
        r.body["message"],
        "Apply failed with 1 conflict: conflict with \"portico\": .data.k"
    );
    let r = patch(
        &sb,
        "admin",
        &format!("{base}/applied?fieldManager=intruder&force=true"),
        "application/apply-patch+yaml",
        other,
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["data"]["k"], "other");
    // Apply without fieldManager is refused.
    let r = patch(
        &sb,
        "admin",
        &format!("{base}/applied"),
        "application/apply-patch+yaml",
        cfg,
    )
    .await;
    assert_eq!(r.code, 422);
    // dryRun: nothing stored.
    let r = post(
        &sb,
        "admin",
        &format!("{base}?dryRun=All"),
        json!({"metadata": {"name": "dry"}}),
    )
    .await;
    assert_eq!(r.code, 201);
    assert_eq!(get(&sb, &format!("{base}/dry")).await.code, 404);
    let r = http(
        &sb,
        "admin",
        "DELETE",
        &format!("{base}/c?dryRun=All"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(get(&sb, &url).await.code, 200);
    sb.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("st").await.unwrap();
    let base = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        "status": {"replicas": 99}});
    let r = post(&sb, "admin", &base, d).await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["status"], json!({}));
    assert_eq!(r.body["metadata"]["generation"], 1);
    let url = format!("{base}/d");
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/merge-patch+json",
        json!({"status": {"replicas": 5}, "metadata": {"labels": {"l": "1"}}}),
    )
    .await;
    assert_eq!(r.body["status"], json!({}));
    assert_eq!(r.body["metadata"]["generation"], 1);
    let r = patch(
        &sb,
        "admin",
        &format!("{url}/status"),
        "application/merge-patch+json",
        json!({"status": {"replicas": 5}, "spec": {"replicas": 7}}),
    )
    .await;
    assert_eq!(r.body["status"]["replicas"], 5);
    assert_eq!(r.body["spec"]["replicas"], 1);
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/merge-patch+json",
        json!({"spec": {"replicas": 3}}),
    )
    .await;
    assert_eq!(r.body["metadata"]["generation"], 2);
    // selector is immutable
    let r = patch(
        &sb,
        "admin",
        &url,
        "application/merge-patch+json",
        json!({"spec": {"selector": {"matchLabels": {"a": "c"}}}}),
    )
    .await;
    assert_eq!(r.code, 422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{}",
        r.text
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn crds_serve_custom_resources() {
    let sb = start().await;
    let ns = sb.create_namespace("crd").await.unwrap();
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "exposures.portico.dev"},
        "spec": {"group": "portico.dev", "scope": "Namespaced",
            "names": {"plural": "exposures", "singular": "exposure", "kind": "Exposure", "shortNames": ["exp"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "additionalPrinterColumns": [{"name": "Tag", "type": "string", "jsonPath": ".spec.tag"}]}]}});
    let r = post(
        &sb,
        "admin",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert!(r.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established"));
    let disc = get(&sb, "/apis/portico.dev/v1alpha1").await;
    assert_eq!(disc.body["resources"][0]["name"], "exposures");
    assert_eq!(disc.body["resources"][1]["name"], "exposures/status");
    let base = format!("/apis/portico.dev/v1alpha1/namespaces/{ns}/exposures");
    let r = post(
        &sb,
        "user1",
        &base,
        json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": "e"}, "spec": {"tag": "foobar"}, "status": {"x": 1}}),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert!(r.body.get("status").is_none());
    let r = patch(
        &sb,
        "admin",
        &format!("{base}/e/status"),
        "application/merge-patch+json",
        json!({"status": {"ready": true}}),
    )
    .await;
    assert_eq!(r.body["status"]["ready"], true);
    let t = http_raw(
        &sb,
        "admin",
        "GET",
        &base,
        "",
        vec![],
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
    )
    .await;
    assert_eq!(t.body["kind"], "Table");
    assert_eq!(t.body["columnDefinitions"][1]["name"], "Tag");
    assert_eq!(t.body["rows"][0]["cells"][1], "foobar");
    sb.shutdown().await;
}

#[tokio::test]
async fn garbage_collection_follows_owner_references() {
    let sb = start().await;
    let ns = sb.create_namespace("gc").await.unwrap();
    let owner = post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        json!({"metadata": {"name": "owner"}}),
    )
    .await
    .body;
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
    for n in ["dep1", "dep2"] {
        let r = post(
            &sb,
            "admin",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            json!({"metadata": {"name": n, "ownerReferences": oref}}),
        )
        .await;
        assert_eq!(r.code, 201);
    }
    let orphan_owner = post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        json!({"metadata": {"name": "o2"}}),
    )
    .await
    .body;
    let oref2 = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o2", "uid": orphan_owner["metadata"]["uid"]}]);
    post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/secrets"),
        json!({"metadata": {"name": "kept", "ownerReferences": oref2}}),
    )
    .await;
    http(
        &sb,
        "admin",
        "DELETE",
        &format!("/api/v1/namespaces/{ns}/configmaps/owner"),
        "application/json",
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    http(
        &sb,
        "admin",
        "DELETE",
        &format!("/api/v1/namespaces/{ns}/configmaps/o2"),
        "application/json",
        Some(json!({"propagationPolicy": "Orphan"})),
    )
    .await;
    let h = sb.handle();
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.objects("", "secrets", Some(&nsc))
            .len()
            .eq(&1)
            .then_some(())
    })
    .await;
    let kept = sb.object("", "secrets", &ns, "kept").unwrap();
    assert!(kept["metadata"]["ownerReferences"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    // Counters: the GC deleted through the API as the garbage collector.
    sb.shutdown().await;
}

#[tokio::test]
async fn label_validation_uses_apiserver_wording() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("lbl").await.unwrap();
    let r = post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({"jarvice-job-ipaddr": "user1-"})),
    )
    .await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["message"], "Pod \"p\" is invalid: metadata.labels: Invalid value: \"user1-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.labels");
    let long = "a".repeat(64);
    let r = post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({"k": long})),
    )
    .await;
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("must be no more than 63 characters"));
    let ok = post(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({"k": "user1-foobar"})),
    )
    .await;
    assert_eq!(ok.code, 201);
    let r = patch(
        &sb,
        "admin",
        &format!("/api/v1/namespaces/{ns}/pods/p"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"bad key": "x"}}}),
    )
    .await;
    assert_eq!(r.code, 422);
    sb.shutdown().await;
}

#[tokio::test]
async fn services_allocate_ips_and_node_ports() {
    let sb = start_with(|o| o.lb_pool = vec!["192.0.2.100".into(), "192.0.2.101".into()]).await;
    let ns = sb.create_namespace("svc").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/services");
    let svc = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let r = post(&sb, "admin", &base, svc("np", json!({"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!(r.code, 201, "{}", r.text);
    let ip = r.body["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."));
    assert_eq!(r.body["spec"]["ports"][0]["targetPort"], 80);
    let r = post(
        &sb,
        "admin",
        &base,
        svc(
            "np2",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    )
    .await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["message"], "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated");
    let r = post(&sb, "admin", &base, svc("np3", json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}))).await;
    let p0 = r.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let p1 = r.body["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&p0) && p0 != p1);
    let r = post(
        &sb,
        "admin",
        &base,
        svc(
            "hl",
            json!({"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(r.body["spec"]["clusterIP"], "None");
    let r = patch(
        &sb,
        "admin",
        &format!("{base}/np"),
        "application/merge-patch+json",
        json!({"spec": {"clusterIP": "10.96.99.99"}}),
    )
    .await;
    assert_eq!(r.code, 422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.clusterIP: Invalid value"),
        "{}",
        r.text
    );
    // SSA without nodePort keeps the allocated one and writes nothing.
    let cfg = svc(
        "np3",
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
    );
    let first = patch(
        &sb,
        "admin",
        &format!("{base}/np3?fieldManager=portico&force=true"),
        "application/apply-patch+yaml",
        cfg.clone(),
    )
    .await;
    assert_eq!(
        first.body["spec"]["ports"][0]["nodePort"].as_i64(),
        Some(p0),
        "{}",
        first.text
    );
    let again = patch(
        &sb,
        "admin",
        &format!("{base}/np3?fieldManager=portico&force=true"),
        "application/apply-patch+yaml",
        cfg,
    )
    .await;
    assert_eq!(
        again.body["metadata"]["resourceVersion"], first.body["metadata"]["resourceVersion"],
        "{}\n{}",
        first.text, again.text
    );
    // LoadBalancer from the pool, honouring a requested address.
    post(&sb, "admin", &base, json!({"metadata": {"name": "lb", "annotations": {"metallb.io/loadBalancerIPs": "192.0.2.101"}}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).await;
    let h = sb.handle();
    let nsc = ns.clone();
    let lb = wait_for(Duration::from_secs(5), || {
        h.object("", "services", &nsc, "lb")
            .filter(|s| s.pointer("/status/loadBalancer/ingress/0/ip").is_some())
    })
    .await;
    assert_eq!(
        lb["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.101"
    );
    assert!(lb["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    sb.shutdown().await;
}

#[tokio::test]
async fn authentication_and_impersonation() {
    let sb = start_with(|o| o.controllers = false).await;
    let r = http_raw(&sb, "nobody", "GET", "/api/v1/namespaces", "", vec![], &[]).await;
    assert_eq!(r.code, 401);
    let ns = sb.create_namespace("auth").await.unwrap();
    let r = http_raw(
        &sb,
        "admin",
        "POST",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        "application/json",
        json!({"metadata": {"name": "x"}, "data": {"a": "b"}})
            .to_string()
            .into_bytes(),
        &[("impersonate-user", "user1")],
    )
    .await;
    assert_eq!(r.code, 201);
    let mf = &r.body["metadata"]["managedFields"];
    assert!(mf.is_array());
    let r = http_raw(
        &sb,
        "user1",
        "GET",
        "/api/v1/namespaces",
        "",
        vec![],
        &[("impersonate-user", "admin")],
    )
    .await;
    assert_eq!(r.code, 403);
    assert_eq!(r.body["reason"], "Forbidden");
    let c = sb.counters();
    assert_eq!(
        c.count(Some("user1"), Some("create"), Some("configmaps")),
        1
    );
    assert_eq!(c.writes_by("user2"), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn discovery_documents() {
    let sb = start_with(|o| o.controllers = false).await;
    let v = get(&sb, "/version").await;
    assert_eq!(v.body["major"], "1");
    let apis = get(&sb, "/apis").await;
    let groups: Vec<&str> = apis.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in [
        "apps",
        "batch",
        "networking.k8s.io",
        "coordination.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g}");
    }
    let core = get(&sb, "/api/v1").await;
    let svc = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "services")
        .unwrap()
        .clone();
    assert_eq!(svc["shortNames"], json!(["svc"]));
    let apps = get(&sb, "/apis/apps/v1").await;
    assert!(apps.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "statefulsets" && r["shortNames"] == json!(["sts"])));
    let o3 = get(&sb, "/openapi/v3").await;
    assert!(o3.body["paths"]["api/v1"]["serverRelativeURL"].is_string());
    sb.shutdown().await;
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let sb = start().await;
    let ns = sb.create_namespace("page").await.unwrap();
    for i in 0..7 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}});
        let r = sb
            .request(
                "admin",
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(cm),
            )
            .await;
        assert_eq!(r.code, 201);
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let path = format!("/api/v1/namespaces/{ns}/configmaps?limit=3&continue={token}");
        let r = sb.request("admin", "GET", &path, None).await;
        assert_eq!(r.code, 200, "{}", r.body);
        pages += 1;
        let rv = r.body["metadata"]["resourceVersion"].clone();
        assert_eq!(
            *first_rv.get_or_insert(rv.clone()),
            rv,
            "pages share one resourceVersion"
        );
        for item in r.body["items"].as_array().unwrap() {
            names.push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
        match r.body["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    let bad = sb
        .request(
            "admin",
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps?limit=3&continue=nonsense"),
            None,
        )
        .await;
    assert_eq!(bad.code, 400);
    sb.shutdown().await;
}
