//! `make fixtures`: records, from a real Kubernetes control plane (e2e/controlplane/cluster.sh,
//! the one `make cluster` and the e2e tests start), the test data the tests read:
//!
//! - `tests/data/admission-reviews/NN-<kind>-<op>-<who>.json`: the AdmissionReviews the apiserver
//!   sends a webhook, captured by a webhook registered here (a TLS server on 127.0.0.1 that keeps
//!   every body and answers `allowed`), for actions done with kubectl as the cluster's users;
//! - `tests/data/labels/label_keys.tsv` and `label_values.tsv`: the apiserver's own verdict on
//!   each candidate label key and value (a server-side dry-run create of a ConfigMap carrying it);
//! - `fuzz/corpus/review/recorded-*.json`: the recorded reviews again, as fuzz seeds.
//!
//! The capturing webhook is a mutating one named `capture`, so the apiserver calls it before
//! Portico's (configurations are called in the order of their names): it sees each object as the
//! client sent it plus the apiserver's defaults, before any webhook changed it. The reviews are
//! written as received, only indented (the keys keep the apiserver's order).
//!
//! Candidate label strings: those already in `tests/data/labels/*.tsv` (first taken from
//! Kubernetes' own validation tests) plus the edge cases below.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

type Store = Arc<Mutex<Vec<String>>>;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cluster = Cluster::start(&root)?;
    let result = record(&root, &cluster);
    cluster.stop();
    result
}

fn record(root: &Path, cluster: &Cluster) -> anyhow::Result<()> {
    let store: Store = Arc::default();
    let rt = tokio::runtime::Runtime::new()?;
    let pki = cluster.dir.join("pki/portico");
    let port = rt.block_on(serve(&pki, store.clone()))?;
    let ca_bundle = std::fs::read_to_string(pki.join("ca-bundle.b64"))?;
    let mut r = Recorder {
        cluster,
        store,
        files: Vec::new(),
        out: root.join("tests/data/admission-reviews"),
    };
    r.register(port, ca_bundle.trim())?;
    r.reviews()?;
    let version = r.server_version()?;
    r.write(root, &version)?;
    labels(root, cluster, &version)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The capturing webhook.

async fn serve(pki: &Path, store: Store) -> anyhow::Result<u16> {
    let certs =
        CertificateDer::pem_file_iter(pki.join("tls.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join("tls.key"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| capture(req, store.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(port)
}

async fn capture(
    req: hyper::Request<hyper::body::Incoming>,
    store: Store,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let uid = serde_json::from_str::<Value>(&text)
        .ok()
        .map(|v| v["request"]["uid"].clone())
        .unwrap_or(Value::Null);
    store.lock().unwrap().push(text);
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .expect("response"))
}

/// The compact JSON the apiserver sends, indented: only whitespace is added, nothing reordered.
fn indent(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let (mut in_str, mut esc) = (false, false);
    let mut chars = raw.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------------
// The cluster.

struct Cluster {
    dir: PathBuf,
    kubectl: PathBuf,
    child: std::process::Child,
}

impl Cluster {
    fn start(root: &Path) -> anyhow::Result<Cluster> {
        let kubectl = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".tools/kubectl/bin/kubectl"));
        if !kubectl.exists() {
            bail!(
                "kubectl missing at {}: run `make kubectl`",
                kubectl.display()
            );
        }
        // target/debug/examples/record_fixtures → target/debug/portico
        let exe = std::env::current_exe()?;
        let portico = std::env::var_os("PORTICO")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                exe.parent()
                    .and_then(Path::parent)
                    .expect("target dir")
                    .join("portico")
            });
        if !portico.exists() {
            bail!("portico missing at {}: build it first", portico.display());
        }
        let base = std::env::temp_dir().join(format!("portico-fixtures-{}", std::process::id()));
        let dir = base.join("cluster");
        std::fs::create_dir_all(&base)?;
        let log_path = base.join("cluster.sh.log");
        let log = std::fs::File::create(&log_path)?;
        eprintln!(
            "fixtures: starting the control plane (state and logs in {})",
            base.display()
        );
        let child = Command::new(root.join("e2e/controlplane/cluster.sh"))
            .env("CLUSTER_DIR", &dir)
            .env("CLUSTER_API_PORT", free_port(false).to_string())
            .env("CLUSTER_ETCD_PORT", free_port(true).to_string())
            .env("CLUSTER_WEBHOOK_PORT", free_port(false).to_string())
            .env("CLUSTER_OPS_PORT", free_port(false).to_string())
            .env("PORTICO", &portico)
            .env("KUBECTL", &kubectl)
            .env("PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("e2e/controlplane/cluster.sh")?;
        let mut cluster = Cluster {
            dir,
            kubectl,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(900);
        while !cluster.dir.join("ready").exists() {
            if let Ok(Some(status)) = cluster.child.try_wait() {
                bail!(
                    "the cluster did not start ({status}); see {}",
                    log_path.display()
                );
            }
            if Instant::now() > deadline {
                cluster.stop();
                bail!(
                    "the cluster was not ready in time; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("fixtures: cluster ready");
        Ok(cluster)
    }

    /// SIGTERM, so that the script stops its components, then wait.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// kubectl as `context` (a context of the cluster's kubeconfig, or a kubeconfig file path
    /// when it contains a '/'), with `stdin` if given: (success, stdout, stderr).
    fn kubectl(&self, context: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new("timeout");
        cmd.arg("30").arg(&self.kubectl);
        if context.contains('/') {
            cmd.arg("--kubeconfig").arg(context);
        } else {
            cmd.arg("--kubeconfig").arg(self.dir.join("kubeconfig"));
            cmd.args(["--context", context]);
        }
        cmd.args(["--request-timeout=20s"]).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, context: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let (ok, out, err) = self.kubectl(context, args, stdin);
        if !ok {
            bail!("kubectl --context {context} {}: {err}", args.join(" "));
        }
        Ok(out)
    }
}

fn free_port(pair: bool) -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if !pair
            || (port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok())
        {
            return port;
        }
    }
    panic!("no free loopback port pair");
}

// ---------------------------------------------------------------------------------------------
// The reviews.

struct Recorder<'a> {
    cluster: &'a Cluster,
    store: Store,
    /// (file name, body as received, how it was made)
    files: Vec<(String, String, String)>,
    out: PathBuf,
}

/// What a wanted review looks like: resource, subresource ("" for none), operation, name, and
/// the username (None: any).
struct Want<'w> {
    resource: &'w str,
    sub: &'w str,
    op: &'w str,
    name: Option<&'w str>,
    user: Option<&'w str>,
}

impl Want<'_> {
    fn matches(&self, review: &Value) -> bool {
        let r = &review["request"];
        r["resource"]["resource"] == self.resource
            && r["subResource"].as_str().unwrap_or("") == self.sub
            && r["operation"] == self.op
            && self.name.is_none_or(|n| r["name"] == n)
            && self.user.is_none_or(|u| r["userInfo"]["username"] == u)
    }
}

fn want<'w>(resource: &'w str, op: &'w str, name: &'w str) -> Want<'w> {
    Want {
        resource,
        sub: "",
        op,
        name: Some(name),
        user: None,
    }
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\n  labels: {app: NAME}\nspec:\n  containers: [{name: main, image: busybox, command: [sleep, '3600']}]\n";

fn template(name: &str) -> String {
    format!(
        "  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: main, image: busybox, command: [sleep, '3600']}}]\n"
    )
}

impl Recorder<'_> {
    fn register(&self, port: u16, ca_bundle: &str) -> anyhow::Result<()> {
        let rule = |group: &str, resources: &str| {
            format!(
                "      - {{operations: ['*'], apiGroups: ['{group}'], apiVersions: [v1], resources: [{resources}], scope: Namespaced}}\n"
            )
        };
        let config = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: capture}}\nwebhooks:\n  - name: capture.fixtures.portico.dev\n    clientConfig: {{url: 'https://127.0.0.1:{port}/capture', caBundle: '{ca_bundle}'}}\n    rules:\n{}{}{}    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: team}}}}\n    sideEffects: None\n    admissionReviewVersions: [v1]\n    failurePolicy: Fail\n    timeoutSeconds: 10\n",
            rule("", "pods, pods/status, pods/ephemeralcontainers, pods/exec"),
            rule("batch", "jobs, cronjobs"),
            rule("apps", "deployments, replicasets, statefulsets, daemonsets"),
        );
        self.cluster
            .ok("admin", &["apply", "-f", "-"], Some(&config))?;
        // The apiserver picks the configuration up within a second or so: probe with dry runs.
        let probe = POD.replace("NAME", "probe");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mark = self.store.lock().unwrap().len();
            self.cluster.kubectl(
                "admin",
                &["create", "--dry-run=server", "-f", "-"],
                Some(&probe),
            );
            if self
                .find(mark, &want("pods", "CREATE", "probe"), 1)
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the capturing webhook was never called");
            }
        }
    }

    /// The first review from index `mark` on that matches, waiting up to `secs`.
    fn find(&self, mark: usize, want: &Want, secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            {
                let store = self.store.lock().unwrap();
                for body in store.iter().skip(mark) {
                    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                    if want.matches(&v) {
                        return Some(body.clone());
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn mark(&self) -> usize {
        self.store.lock().unwrap().len()
    }

    /// Runs kubectl as `who` and keeps the review that matches `want` as
    /// `NN-<slug>-<who>.json` (or `NN-<slug>.json` when `who` is empty).
    fn act<'w>(
        &mut self,
        slug: &str,
        who: &'w str,
        context: &str,
        args: &[&str],
        stdin: Option<&str>,
        mut want: Want<'w>,
    ) -> bool {
        // The review of this action, not one a controller sent meanwhile (the scheduler writes
        // pods/status too).
        want.user = want.user.or(Some(match who {
            "serviceaccount" => "system:serviceaccount:team:builder",
            who => who,
        }));
        let mark = self.mark();
        let (ok, _, err) = self.cluster.kubectl(context, args, stdin);
        let how = format!(
            "`kubectl {}{}`{}",
            if context.contains('/') {
                String::new()
            } else {
                format!("--context {context} ")
            },
            args.join(" "),
            if ok {
                String::new()
            } else {
                format!(" (kubectl then failed: {})", first_line(&err))
            }
        );
        self.keep(mark, slug, who, &want, &how)
    }

    fn keep(&mut self, mark: usize, slug: &str, who: &str, want: &Want, how: &str) -> bool {
        match self.find(mark, want, 20) {
            Some(body) => {
                let n = self.files.len() + 1;
                let name = if who.is_empty() {
                    format!("{n:02}-{slug}.json")
                } else {
                    format!("{n:02}-{slug}-{who}.json")
                };
                eprintln!("fixtures: {name}");
                self.files.push((name, body, how.to_string()));
                true
            }
            None => {
                eprintln!("fixtures: NOT RECORDED: {slug} {who} ({how})");
                false
            }
        }
    }

    fn reviews(&mut self) -> anyhow::Result<()> {
        let c = self.cluster;
        // Pod, by user1.
        let pod = POD.replace("NAME", "rec-pod");
        self.act(
            "pod-create",
            "user1",
            "user1",
            &["create", "-f", "-"],
            Some(&pod),
            want("pods", "CREATE", "rec-pod"),
        );
        self.act(
            "pod-update",
            "user1",
            "user1",
            &["label", "pod", "rec-pod", "tier=web"],
            None,
            want("pods", "UPDATE", "rec-pod"),
        );
        self.act(
            "pod-delete",
            "user1",
            "user1",
            &["delete", "pod", "rec-pod", "--wait=false"],
            None,
            want("pods", "DELETE", "rec-pod"),
        );

        // Job, by user1, and the pod the job controller makes for it.
        let mark = self.mark();
        self.act(
            "job-create",
            "user1",
            "user1",
            &["create", "job", "rec-job", "--image", "busybox"],
            None,
            want("jobs", "CREATE", "rec-job"),
        );
        self.keep(
            mark,
            "pod-create",
            "job-controller",
            &Want {
                resource: "pods",
                sub: "",
                op: "CREATE",
                name: None,
                user: Some("system:serviceaccount:kube-system:job-controller"),
            },
            "the job controller, for `rec-job`",
        );
        self.act(
            "job-update",
            "user1",
            "user1",
            &["label", "job", "rec-job", "tier=web"],
            None,
            want("jobs", "UPDATE", "rec-job"),
        );
        self.act(
            "job-delete",
            "user1",
            "user1",
            &["delete", "job", "rec-job", "--wait=false"],
            None,
            want("jobs", "DELETE", "rec-job"),
        );

        // CronJob (a schedule that does not come during the recording).
        self.act(
            "cronjob-create",
            "user1",
            "user1",
            &[
                "create",
                "cronjob",
                "rec-cron",
                "--image",
                "busybox",
                "--schedule",
                "0 0 1 1 *",
            ],
            None,
            want("cronjobs", "CREATE", "rec-cron"),
        );
        self.act(
            "cronjob-update",
            "user1",
            "user1",
            &["label", "cronjob", "rec-cron", "tier=web"],
            None,
            want("cronjobs", "UPDATE", "rec-cron"),
        );
        self.act(
            "cronjob-delete",
            "user1",
            "user1",
            &["delete", "cronjob", "rec-cron", "--wait=false"],
            None,
            want("cronjobs", "DELETE", "rec-cron"),
        );

        // Deployment, and the ReplicaSet and pod its controllers make.
        let mark = self.mark();
        self.act(
            "deployment-create",
            "user1",
            "user1",
            &["create", "deployment", "rec-deploy", "--image", "busybox"],
            None,
            want("deployments", "CREATE", "rec-deploy"),
        );
        self.keep(
            mark,
            "replicaset-create",
            "deployment-controller",
            &Want {
                resource: "replicasets",
                sub: "",
                op: "CREATE",
                name: None,
                user: Some("system:serviceaccount:kube-system:deployment-controller"),
            },
            "the deployment controller, for `rec-deploy`",
        );
        self.keep(
            mark,
            "pod-create",
            "replicaset-controller",
            &Want {
                resource: "pods",
                sub: "",
                op: "CREATE",
                name: None,
                user: Some("system:serviceaccount:kube-system:replicaset-controller"),
            },
            "the replicaset controller, for `rec-deploy`",
        );
        self.act(
            "deployment-update",
            "user1",
            "user1",
            &["label", "deployment", "rec-deploy", "tier=web"],
            None,
            want("deployments", "UPDATE", "rec-deploy"),
        );
        self.act(
            "deployment-delete",
            "user1",
            "user1",
            &["delete", "deployment", "rec-deploy", "--wait=false"],
            None,
            want("deployments", "DELETE", "rec-deploy"),
        );

        // ReplicaSet, StatefulSet, DaemonSet from manifests.
        for (kind, resource, name, extra) in [
            ("ReplicaSet", "replicasets", "rec-rs", "  replicas: 0\n"),
            (
                "StatefulSet",
                "statefulsets",
                "rec-sts",
                "  replicas: 0\n  serviceName: rec-sts\n",
            ),
            ("DaemonSet", "daemonsets", "rec-ds", ""),
        ] {
            let manifest = format!(
                "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{extra}{}",
                template(name)
            );
            let slug = kind.to_lowercase();
            self.act(
                &format!("{slug}-create"),
                "user1",
                "user1",
                &["create", "-f", "-"],
                Some(&manifest),
                want(resource, "CREATE", name),
            );
            self.act(
                &format!("{slug}-update"),
                "user1",
                "user1",
                &["label", resource, name, "tier=web"],
                None,
                want(resource, "UPDATE", name),
            );
            self.act(
                &format!("{slug}-delete"),
                "user1",
                "user1",
                &["delete", resource, name, "--wait=false"],
                None,
                want(resource, "DELETE", name),
            );
        }

        // A server-side dry run.
        let dry = POD.replace("NAME", "rec-dry");
        self.act(
            "pod-create-dryrun",
            "user1",
            "user1",
            &["create", "--dry-run=server", "-f", "-"],
            Some(&dry),
            want("pods", "CREATE", "rec-dry"),
        );

        // Subresources of a pod that stays: status (as a node's kubelet would, but as admin),
        // ephemeral containers (`kubectl debug`), and exec (CONNECT; no kubelet answers).
        let target = POD.replace("NAME", "rec-target");
        c.ok("user1", &["create", "-f", "-"], Some(&target))?;
        let status = r#"{"status":{"conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"recorded by make fixtures"}]}}"#;
        self.act(
            "pod-status-update",
            "admin",
            "admin",
            &[
                "patch",
                "pod",
                "rec-target",
                "--subresource=status",
                "--type=merge",
                "-p",
                status,
            ],
            None,
            Want {
                resource: "pods",
                sub: "status",
                op: "UPDATE",
                name: Some("rec-target"),
                user: None,
            },
        );
        // As admin: the `edit` role does not grant pods/ephemeralcontainers.
        self.act(
            "pod-ephemeralcontainers-update",
            "admin",
            "admin",
            &[
                "debug",
                "pod/rec-target",
                "--image=busybox",
                "-c",
                "debugger",
                "--",
                "sleep",
                "60",
            ],
            None,
            Want {
                resource: "pods",
                sub: "ephemeralcontainers",
                op: "UPDATE",
                name: Some("rec-target"),
                user: None,
            },
        );
        self.act(
            "pod-exec-connect",
            "user1",
            "user1",
            &["exec", "rec-target", "-c", "main", "--", "true"],
            None,
            Want {
                resource: "pods",
                sub: "exec",
                op: "CONNECT",
                name: Some("rec-target"),
                user: None,
            },
        );

        // The administrator impersonating user2 (with a group of its own).
        let imp = POD.replace("NAME", "rec-impersonated");
        self.act(
            "pod-create-impersonated",
            "user2",
            "admin",
            &[
                "--as",
                "user2",
                "--as-group",
                "tenants",
                "create",
                "-f",
                "-",
            ],
            Some(&imp),
            want("pods", "CREATE", "rec-impersonated"),
        );

        // A service account with `edit` in team, by its token.
        c.ok(
            "admin",
            &["-n", "team", "create", "serviceaccount", "builder"],
            None,
        )?;
        c.ok(
            "admin",
            &[
                "-n",
                "team",
                "create",
                "rolebinding",
                "builder-edit",
                "--clusterrole=edit",
                "--serviceaccount=team:builder",
            ],
            None,
        )?;
        let token = c.ok(
            "admin",
            &[
                "-n",
                "team",
                "create",
                "token",
                "builder",
                "--duration",
                "1h",
            ],
            None,
        )?;
        let admin_kc = std::fs::read_to_string(c.dir.join("admin.kubeconfig"))?;
        let head = admin_kc.split("users:").next().unwrap_or_default();
        let kc = c.dir.join("builder.kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "{head}users:\n- name: builder\n  user:\n    token: {}\ncontexts:\n- name: builder\n  context: {{cluster: portico-e2e, user: builder, namespace: team}}\ncurrent-context: builder\n",
                token.trim()
            ),
        )?;
        let kc = kc.display().to_string();
        self.act(
            "job-create",
            "serviceaccount",
            &kc,
            &["create", "job", "rec-sa-job", "--image", "busybox"],
            None,
            want("jobs", "CREATE", "rec-sa-job"),
        );
        // So that the SOURCES table does not show the temporary path.
        if let Some(last) = self.files.last_mut() {
            last.2 = last.2.replace(&format!("--kubeconfig {kc} "), "");
            last.2 = last.2.replace(&kc, "builder.kubeconfig");
        }
        Ok(())
    }

    fn server_version(&self) -> anyhow::Result<String> {
        let v: Value =
            serde_json::from_str(&self.cluster.ok("admin", &["version", "-o", "json"], None)?)?;
        Ok(format!(
            "kube-apiserver {}, kubectl {}",
            v["serverVersion"]["gitVersion"].as_str().unwrap_or("?"),
            v["clientVersion"]["gitVersion"].as_str().unwrap_or("?")
        ))
    }

    fn write(&self, root: &Path, version: &str) -> anyhow::Result<()> {
        let corpus = root.join("fuzz/corpus/review");
        std::fs::create_dir_all(&self.out)?;
        for dir in [&self.out, &corpus] {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let recorded = if dir == &corpus {
                    name.starts_with("recorded-")
                } else {
                    name.ends_with(".json")
                };
                if recorded {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        let mut table = String::new();
        for (name, body, how) in &self.files {
            let pretty = indent(body);
            let a: Value = serde_json::from_str(body)?;
            let b: Value = serde_json::from_str(&pretty)?;
            assert_eq!(a, b, "{name}: indenting changed the review");
            std::fs::write(self.out.join(name), &pretty)?;
            std::fs::write(corpus.join(format!("recorded-{name}")), body)?;
            let r = &a["request"];
            let sub = r["subResource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            table.push_str(&format!(
                "| {name} | {} {}{sub} | {} | {} | {how} |\n",
                r["operation"].as_str().unwrap_or("?"),
                r["resource"]["resource"].as_str().unwrap_or("?"),
                r["userInfo"]["username"].as_str().unwrap_or("?"),
                if r["dryRun"] == json!(true) {
                    "dryRun"
                } else {
                    ""
                },
            ));
        }
        let sources = format!(
            "# Recorded AdmissionReviews\n\n\
             Every file here is an AdmissionReview exactly as a real Kubernetes apiserver sent it\n\
             ({version}), recorded by `make fixtures` (`examples/record_fixtures.rs`). Nothing was\n\
             edited by hand: the files are the bodies received, indented (keys in the order the\n\
             apiserver wrote them, uids and timestamps as recorded).\n\n\
             ## How they are made\n\n\
             `make fixtures` starts the control plane of the e2e tier (`e2e/controlplane/cluster.sh`,\n\
             see docs/e2e.md; Portico's webhooks are registered in it as usual), registers a mutating\n\
             webhook named `capture` (a TLS server on 127.0.0.1 in the recorder that keeps every body\n\
             and answers `allowed`; called before Portico's because configurations are called in the\n\
             order of their names) for pods (and `pods/status`, `pods/ephemeralcontainers`,\n\
             `pods/exec`), jobs, cronjobs, deployments, replicasets, statefulsets and daemonsets in\n\
             the namespace `team`, does the actions below with kubectl, and keeps, for each, the\n\
             review that matches it. Re-recording replaces every `*.json` here and the\n\
             `fuzz/corpus/review/recorded-*.json` seeds; uids, timestamps and resourceVersions change.\n\n\
             Identities: `user1` and `admin` (O=system:masters) are client certificates of the\n\
             cluster CA; `serviceaccount` is `team:builder` with the `edit` role, by a bound token;\n\
             `pod-create-impersonated-user2` is `admin` with `--as user2 --as-group tenants`; the\n\
             controllers' reviews come from the real kube-controller-manager\n\
             (`--use-service-account-credentials`). Whatever Portico (registered after `capture`)\n\
             then answered does not change what was recorded; where kubectl failed afterwards (e.g.\n\
             `exec`, since no kubelet runs), the table says so.\n\n\
             | file | request | user | | made by |\n| --- | --- | --- | --- | --- |\n{table}"
        );
        std::fs::write(self.out.join("SOURCES.md"), sources)?;
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().replace('|', "\\|")
}

// ---------------------------------------------------------------------------------------------
// Label keys and values: the apiserver's verdict.

fn labels(root: &Path, cluster: &Cluster, version: &str) -> anyhow::Result<()> {
    // The candidates already in the repository's tables are judged again (a re-record keeps
    // every string once taken from Kubernetes' own validation tests), then the edge cases below.
    let dir = root.join("tests/data/labels");
    let from_tables = |name: &str| -> Vec<String> {
        let path = dir.join(format!("{name}.tsv"));
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.rsplit_once('\t'))
                .map(|(v, _)| v.to_string())
                .collect(),
            Err(_) => {
                eprintln!(
                    "fixtures: {} not found; only the built-in candidates",
                    path.display()
                );
                Vec::new()
            }
        }
    };
    let a = |n: usize| "a".repeat(n);
    // The longest DNS subdomain (253): labels of 63, 63, 63, 59 and 1 with their four dots.
    let prefix253 = format!("{}.{}.{}.{}.b", a(63), a(63), a(63), a(59));
    assert_eq!(prefix253.len(), 253);
    let mut keys = from_tables("label_keys");
    keys.extend(
        [
            "",
            "a",
            "A",
            "Z",
            "a_b",
            "a.b",
            "a-b",
            "_a",
            "a_",
            ".a",
            "a.",
            "a..b",
            "a b",
            " a",
            "a:b",
            "café",
            "a/b/c",
            "/a",
            "a/",
            "/",
            "example.com/",
            "Example.com/a",
            "example_com/a",
            "-example.com/a",
            "example.com-/a",
            "example..com/a",
            ".example.com/a",
            "example.com./a",
            "example.com/-a",
            "example.com/a-",
            "example.com/_a",
            "example.com/a.b",
            "kubernetes.io/a",
            "k8s.io/A_b.C-d",
            "portico.dev/user",
            "jarvice-job-ipaddr",
            "1.2.3.4/a",
            "a1/b2",
        ]
        .map(String::from),
    );
    keys.push(a(64));
    keys.push(format!("example.com/{}", a(63)));
    keys.push(format!("example.com/{}", a(64)));
    keys.push(format!("{prefix253}/a"));
    keys.push(format!("{prefix253}b/a"));
    keys.push(format!("{}/a", a(63)));
    keys.push(format!("{}/a", a(64)));
    let mut values = from_tables("label_values");
    values.extend(
        [
            "a",
            "A",
            "Z9",
            "0",
            "-",
            "_",
            ".",
            "a_b",
            "a.b",
            "a-b",
            "A.b_C-d",
            "_a",
            "a_",
            ".a",
            "a.",
            "a..b",
            "a--b",
            "a__b",
            "a b",
            " a",
            "a ",
            "a/b",
            "a:b",
            "a@b",
            "é",
            "user1-foobar",
            "kubernetes-admin",
            "system:serviceaccount:team:builder",
        ]
        .map(String::from),
    );
    values.push(a(62));
    values.push(format!("{}-", a(62)));
    let dedup = |v: Vec<String>| -> Vec<String> {
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter(|s| !s.contains(['\t', '\n', '\r']) && seen.insert(s.clone()))
            .collect()
    };
    std::fs::create_dir_all(&dir)?;
    let verdict = |labels: Value| -> anyhow::Result<bool> {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "label-probe", "namespace": "default", "labels": labels},
        });
        let (ok, _, err) = cluster.kubectl(
            "admin",
            &["create", "--dry-run=server", "-o", "name", "-f", "-"],
            Some(&cm.to_string()),
        );
        if ok {
            return Ok(true);
        }
        if err.contains("metadata.labels") {
            return Ok(false);
        }
        bail!("the ConfigMap was refused for another reason: {err}")
    };
    for (file, candidates, is_key) in [
        ("label_keys.tsv", dedup(keys), true),
        ("label_values.tsv", dedup(values), false),
    ] {
        let mut text = String::new();
        for c in &candidates {
            let labels = if is_key {
                json!({c.as_str(): "v"})
            } else {
                json!({"k": c})
            };
            let valid = verdict(labels)?;
            text.push_str(&format!(
                "{c}\t{}\n",
                if valid { "valid" } else { "invalid" }
            ));
        }
        std::fs::write(dir.join(file), text)?;
        eprintln!(
            "fixtures: tests/data/labels/{file} ({} rows)",
            candidates.len()
        );
    }
    std::fs::write(
        dir.join("SOURCES.md"),
        format!(
            "# Label keys and values, judged by the apiserver\n\n\
             `label_keys.tsv` and `label_values.tsv` (`candidate<TAB>valid|invalid`) hold the verdict\n\
             of a real Kubernetes apiserver ({version}) on each candidate: `make fixtures`\n\
             (`examples/record_fixtures.rs`) creates, as an administrator and as a server-side dry run,\n\
             a ConfigMap carrying the candidate as a label key (value `v`) or as the value of key `k`;\n\
             `valid` means the apiserver accepted it, `invalid` that it refused it naming\n\
             `metadata.labels`. The candidates are the strings already in these tables (first taken\n\
             from the validation tests of Kubernetes' `apimachinery`) plus the edge cases listed in\n\
             the recorder; the verdicts are the apiserver's, none copied.\n\
             `src/core/label.rs`'s tests compare Portico's verdict with this one on every row.\n"
        ),
    )?;
    Ok(())
}
