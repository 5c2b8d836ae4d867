//! Packaging: the kustomize overlays build with kubectl's own kustomize and say what they promise
//! (the generated TLS Secret and caBundle; cert-manager's Certificate and cainjector annotation),
//! the Dockerfile builds a non-root image of the one binary, the NetworkPolicy example is valid,
//! and `make deploy` refuses clearly when no cluster answers.

mod kubectl_bin;
use kubectl_bin::kubectl;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use portico::server::certs::{mint, CertSpec};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubectl `make test` installs; missing is a failure under CI.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect()
}

fn kustomize(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8_lossy(&out.stdout))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn self_managed_overlay_generates_the_secret_and_injects_the_ca() {
    let kubectl = kubectl();
    // A copy of manifests/, with certificates made by `portico certs`'s code in the overlay.
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("manifests"), tmp.path());
    let certs = tmp.path().join("overlays/self-managed/certs");
    let bundle = mint(&CertSpec {
        service: "portico".into(),
        namespace: "portico-system".into(),
        hosts: vec![],
        days: 1,
    })
    .expect("certs");
    bundle.write_to(&certs).expect("write certs");
    let docs = kustomize(&kubectl, &tmp.path().join("overlays/self-managed"));
    let secret = find(&docs, "Secret")
        .into_iter()
        .find(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("portico-tls-"))
        })
        .expect("generated TLS Secret, its name hashed");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let name = secret["metadata"]["name"].as_str().expect("name");
    let deployment = find(&docs, "Deployment")[0];
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        volumes.iter().any(|v| v["secret"]["secretName"] == name),
        "the Deployment mounts the generated Secret"
    );
    let ca_pem = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for hook in find(&docs, kind)[0]["webhooks"]
            .as_array()
            .expect("webhooks")
        {
            let bundle: String = hook["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle injected")
                .split_whitespace()
                .collect();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(bundle)
                .expect("base64");
            assert_eq!(decoded, ca_pem, "{kind}: the caBundle is the CA");
        }
    }
}

#[test]
fn cert_manager_overlay_asks_for_a_certificate_and_ca_injection() {
    let kubectl = kubectl();
    let docs = kustomize(&kubectl, &root().join("manifests/overlays/cert-manager"));
    let serving = find(&docs, "Certificate")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "portico")
        .expect("the serving Certificate");
    assert_eq!(serving["spec"]["secretName"], "portico-tls");
    let names: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"portico.portico-system.svc"), "{names:?}");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = find(&docs, kind)[0];
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "portico-system/portico"
        );
        assert!(config["metadata"]["labels"].is_object(), "labels kept");
    }
    // The base, whole: the Deployment still mounts portico-tls.
    let deployment = find(&docs, "Deployment")[0];
    assert!(deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["secret"]["secretName"] == "portico-tls"));
}

#[test]
fn the_base_still_builds_from_manifests() {
    let kubectl = kubectl();
    let docs = kustomize(&kubectl, &root().join("manifests"));
    assert_eq!(find(&docs, "Deployment").len(), 1);
    assert!(
        find(&docs, "NetworkPolicy").is_empty(),
        "the example stays out"
    );
}

#[test]
fn network_policy_example_admits_the_ingress_controller_to_routed_pods() {
    let text = std::fs::read_to_string(root().join("manifests/networkpolicy-example.yaml"))
        .expect("example");
    let policy = &docs(&text)[0];
    assert_eq!(policy["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(policy["kind"], "NetworkPolicy");
    let selector = &policy["spec"]["podSelector"]["matchExpressions"][0];
    assert_eq!(selector["key"], "jarvice-job-ipaddr");
    assert_eq!(selector["operator"], "Exists");
    let from = &policy["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
}

#[test]
fn dockerfile_builds_the_binary_in_a_builder_and_runs_it_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"));
    assert!(text.contains("cargo build --release --locked -p portico"));
    assert!(text.contains("COPY --from=build"));
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(user.contains("65532"), "{user}");
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/portico\"]"));
    // The Deployment runs the same user.
    let deployment =
        std::fs::read_to_string(root().join("manifests/base/deployment.yaml")).expect("read");
    assert!(deployment.contains("runAsUser: 65532"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    for never in ["target/", "certs/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == never),
            "{never} in .dockerignore"
        );
    }
}

#[test]
fn make_deploy_refuses_clearly_when_no_cluster_answers() {
    let kubectl = kubectl();
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    // A cluster on a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\nusers: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: gone, context: {{cluster: c, user: u}}}}]\ncurrent-context: gone\n"
        ),
    )
    .expect("kubeconfig");
    let out = Command::new("make")
        .args(["-s", "--no-print-directory", "deploy"])
        .arg(format!("KUBECTL={}", kubectl.display()))
        .current_dir(root())
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("make runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("make deploy: no cluster answers")
            && stderr.contains("context: gone")
            && stderr.contains("nothing was applied"),
        "{stderr}"
    );
}

/// Against the sandbox, `make deploy` says it is the sandbox and only dry-runs the apply: deploy
/// certificates in the webhook configurations would break the Portico that serves the sandbox.
#[test]
fn make_deploy_against_the_sandbox_says_so_and_changes_nothing() {
    let kubectl = kubectl();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sandbox = rt
        .block_on(portico_sandbox::Sandbox::start(
            portico_sandbox::SandboxOptions {
                // As `make run` starts it; a dry run cannot create objects in a namespace it only
                // pretends to create.
                namespaces: vec!["portico-system".into()],
                ..Default::default()
            },
        ))
        .expect("sandbox");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = Command::new("make")
        .args(["-s", "--no-print-directory", "deploy"])
        .arg(format!("KUBECTL={}", kubectl.display()))
        .arg(format!("PORTICO={}", env!("CARGO_BIN_EXE_portico")))
        .current_dir(root())
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("make runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("is Portico's sandbox, not a real cluster"),
        "{stderr}"
    );
    // Every object checked (the wrapped caBundle too), none made.
    for object in [
        "deployment.apps/portico created (server dry run)",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/portico created (server dry run)",
    ] {
        assert!(stdout.contains(object), "{object} missing:\n{stdout}");
    }
    let hooks = sandbox.objects(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
    );
    assert!(hooks.is_empty(), "the dry run made {hooks:?}");
    rt.block_on(sandbox.shutdown());
}
