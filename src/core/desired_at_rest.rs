//! Every object Portico plans, once stored, matches its plan: the apiserver's defaults and
//! allocations (type, cluster IP, node ports, protocols, traffic policies, a default Ingress
//! class) are not drift. A plan that its own stored form does not match is re-applied on every
//! pass, for ever: a write loop at rest.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;

use super::*;
use crate::config::Config;

/// `desired` as the apiserver stores it after a server-side apply: every field it defaults or
/// allocates filled in, as kube-apiserver v1.37 does (`SetDefaults_Service`, the IP and
/// node-port allocators), plus a label and an annotation of someone else's.
fn stored_service(desired: &Service) -> Service {
    let mut v = serde_json::to_value(desired).unwrap();
    let spec = &mut v["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    let type_ = spec["type"].as_str().unwrap().to_string();
    if spec["clusterIP"].is_null() {
        spec["clusterIP"] = json!("10.0.0.17");
    }
    spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    spec["sessionAffinity"] = json!("None");
    spec["internalTrafficPolicy"] = json!("Cluster");
    if type_ != "ClusterIP" {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if type_ == "LoadBalancer" {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    for (i, port) in spec["ports"].as_array_mut().unwrap().iter_mut().enumerate() {
        if port["protocol"].is_null() {
            port["protocol"] = json!("TCP");
        }
        if type_ != "ClusterIP" && port["nodePort"].is_null() {
            port["nodePort"] = json!(31000 + i);
        }
    }
    let meta = &mut v["metadata"];
    meta["resourceVersion"] = json!("42");
    meta["uid"] = json!("stored-uid");
    meta["labels"]["someone.else/label"] = json!("x");
    meta["annotations"]["someone.else/annotation"] = json!("x");
    v["status"] = json!({"loadBalancer": {}});
    serde_json::from_value(v).unwrap()
}

/// `desired` as stored in a cluster whose default IngressClass is `nginx`.
fn stored_ingress(desired: &Ingress) -> Ingress {
    let mut v = serde_json::to_value(desired).unwrap();
    if v["spec"]["ingressClassName"].is_null() {
        v["spec"]["ingressClassName"] = json!("nginx");
    }
    v["metadata"]["resourceVersion"] = json!("43");
    v["status"] = json!({"loadBalancer": {}});
    serde_json::from_value(v).unwrap()
}

fn policy() -> Policy {
    let mut c = Config::default();
    c.provisioner.domain = "apps.test".into();
    Policy::new(c)
}

fn exposure_owner(name: &str) -> Owner {
    Owner {
        api_version: "portico.dev/v1alpha1".into(),
        kind: "Exposure".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

#[test]
fn every_exposure_plan_matches_what_the_apiserver_stores() {
    let p = policy();
    for type_ in ["NodePort", "LoadBalancer", "ClusterIP"] {
        for node_port in [None, Some(30080)] {
            for ingress in [
                None,
                Some(json!({})),
                Some(json!({"ingressClassName": "nginx"})),
            ] {
                let mut port = json!({"name": "http", "port": 80});
                if let Some(np) = node_port {
                    port["nodePort"] = json!(np);
                }
                let mut spec = json!({"tag": "foobar", "user": "user1",
                    "service": {"type": type_, "ports": [port]}});
                if let Some(i) = &ingress {
                    spec["ingress"] = i.clone();
                }
                let spec: ExposureSpec = serde_json::from_value(spec).unwrap();
                let plan = exposure_plan(&p, "team", &exposure_owner("web"), &spec, None).unwrap();
                let what = format!("{type_}, nodePort {node_port:?}, ingress {ingress:?}");
                assert!(
                    service_matches(&plan.service, &stored_service(&plan.service)),
                    "{what}: the stored Service does not match its plan"
                );
                if let Some(ing) = &plan.ingress {
                    assert!(
                        ingress_matches(ing, &stored_ingress(ing)),
                        "{what}: the stored Ingress does not match its plan"
                    );
                }
            }
        }
    }
}

#[test]
fn every_per_job_plan_matches_what_the_apiserver_stores() {
    let p = policy();
    let owner = Owner {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: "mpi".into(),
        uid: "job-uid".into(),
    };
    let labels = Map::from([
        ("jarvice-job-ipaddr".into(), "user1-mpi".into()),
        ("portico.dev/owner".into(), "user1".into()),
    ]);
    for expose in [
        None,
        Some("NodePort"),
        Some("LoadBalancer"),
        Some("ClusterIP"),
        Some("Ingress"),
    ] {
        for headless in [false, true] {
            for node_port in [None, Some("30500")] {
                let request = JobExposureRequest {
                    expose: expose.map(str::to_string),
                    ports: Some("http:5000,metrics:9090".into()),
                    node_port: node_port.map(str::to_string),
                    headless,
                };
                let Some(plan) = job_plan(&p, "team", &owner, &request, &labels).unwrap() else {
                    assert!(!request.is_requested());
                    continue;
                };
                let what =
                    format!("expose {expose:?}, headless {headless}, node port {node_port:?}");
                for svc in &plan.services {
                    assert!(
                        service_matches(svc, &stored_service(svc)),
                        "{what}: the stored Service {:?} does not match its plan",
                        svc.metadata.name
                    );
                }
                if let Some(ing) = &plan.ingress {
                    assert!(
                        ingress_matches(ing, &stored_ingress(ing)),
                        "{what}: the stored Ingress does not match its plan"
                    );
                }
            }
        }
    }
}

#[test]
fn a_headless_service_leaving_out_its_type_still_matches_the_stored_cluster_ip_type() {
    // The form plans had before they named the type: the apiserver still stores ClusterIP.
    let mut desired: Service = serde_json::from_value(json!({
        "metadata": {"name": "w", "namespace": "team"},
        "spec": {"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    assert!(service_matches(&desired, &stored_service(&desired)));
    // A real difference still is one.
    desired.spec.as_mut().unwrap().type_ = Some("NodePort".into());
    let mut stored = stored_service(&desired);
    stored.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    assert!(!service_matches(&desired, &stored));
}

#[test]
fn an_ingress_class_asked_for_is_still_compared() {
    let p = policy();
    let spec: ExposureSpec = serde_json::from_value(json!({"tag": "foobar", "user": "user1",
        "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]},
        "ingress": {"ingressClassName": "nginx"}}))
    .unwrap();
    let plan = exposure_plan(&p, "team", &exposure_owner("web"), &spec, None).unwrap();
    let ing = plan.ingress.unwrap();
    let mut stored = stored_ingress(&ing);
    stored.spec.as_mut().unwrap().ingress_class_name = Some("traefik".into());
    assert!(!ingress_matches(&ing, &stored));
}
