//! A real Kubernetes control plane for the e2e tier: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler built from Kubernetes' own Go modules
//! (`e2e/controlplane/build.sh`, cached per machine), with Portico in its admission path, as
//! `e2e/controlplane/cluster.sh` (what `make cluster` runs) starts them. One cluster per test
//! binary, on free loopback ports, stopped when the test binary exits (the script watches our
//! pid). `PORTICO_E2E_CLUSTER=DIR` uses a cluster already running with its state in DIR (e.g.
//! `.cluster` from `make cluster`) instead.
//!
//! Nothing here skips: a missing tool (Go, kubectl, openssl) fails the test with how to get it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kubectl_bin;
pub use super::kubectl_bin::Ran;

/// How long the control plane may take to come up once built (etcd, apiserver, controllers,
/// Portico, the namespace's default service account): typically 10–20 s on 2 busy cores.
const START_SECS: u64 = 180;

pub struct Cluster {
    /// The state folder: kubeconfig, logs, certificates.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

impl Cluster {
    /// kubectl as `context` (admin, user1, user2, portal, portico, node) in namespace `team`.
    pub fn kubectl(&self, context: &str, args: &[&str], stdin: Option<&str>) -> Ran {
        kubectl_bin::run(&self.kubectl, &self.kubeconfig, context, args, stdin)
    }

    /// [`Cluster::kubectl`] that must succeed; returns stdout.
    pub fn ok(&self, context: &str, args: &[&str], stdin: Option<&str>) -> String {
        let r = self.kubectl(context, args, stdin);
        assert!(
            r.ok,
            "kubectl --context {context} {args:?} failed: {}",
            r.err
        );
        r.out
    }

    /// Makes the namespace `ns` in which user1, user2 and portal have what `team` gives them
    /// (`edit` and Exposures), and waits until the authorizer grants it and the namespace's
    /// default service account (which pods need) exists.
    pub fn tenant_namespace(&self, ns: &str) {
        let tenants = r#"[{apiGroup: rbac.authorization.k8s.io, kind: User, name: user1}, {apiGroup: rbac.authorization.k8s.io, kind: User, name: user2}, {apiGroup: rbac.authorization.k8s.io, kind: User, name: portal}]"#;
        self.ok("admin", &["create", "namespace", ns], None);
        let manifest = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: tenants-edit, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}\n\
             subjects: {tenants}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: tenants-exposures, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tenants-exposures}}\n\
             subjects: {tenants}\n"
        );
        self.ok("admin", &["-n", ns, "apply", "-f", "-"], Some(&manifest));
        // The authorizer learns the bindings from its own watch, and pods need the namespace's
        // default service account, which the controller-manager makes.
        for who in ["user1", "user2", "portal"] {
            for what in ["jobs.batch", "exposures.portico.dev"] {
                eventually(30, &format!("{who} may create {what} in {ns}"), || {
                    self.kubectl(
                        "admin",
                        &["auth", "can-i", "create", what, "-n", ns, "--as", who],
                        None,
                    )
                    .ok
                    .then_some(())
                });
            }
        }
        eventually(30, &format!("{ns}'s default service account"), || {
            self.kubectl(
                "admin",
                &["-n", ns, "get", "serviceaccount", "default"],
                None,
            )
            .ok
            .then_some(())
        });
    }

    /// A port from the `ready` file: `API_PORT`, `WEBHOOK_PORT` (the one the webhook
    /// configurations call), `OPS_PORT`.
    pub fn port(&self, name: &str) -> u16 {
        let ready = std::fs::read_to_string(self.dir.join("ready")).expect("ready file");
        ready
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {}/ready", self.dir.display()))
    }

    /// The Prometheus text of the cluster's own Portico (`OPS_PORT`, `/metrics`).
    pub fn portico_metrics(&self) -> String {
        let port = self.port("OPS_PORT");
        http_get(port, "/metrics")
            .unwrap_or_else(|e| panic!("GET http://127.0.0.1:{port}/metrics: {e}"))
    }

    /// The pid of the Portico the cluster started.
    pub fn portico_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("portico.pid"))
            .expect("portico.pid")
            .trim()
            .parse()
            .expect("pid")
    }

    /// Another `portico serve` as Portico's service account, with the cluster's configuration and
    /// certificate, named `pod_name` in the Lease, its webhook on `webhook_port` (the cluster's
    /// `WEBHOOK_PORT` to take the webhook's place). Ready (ops `/readyz`) when returned; killed
    /// when dropped.
    pub fn start_portico(&self, pod_name: &str, webhook_port: u16) -> Portico {
        let ops = free_port(false);
        let log = std::fs::File::create(self.dir.join(format!("portico-{pod_name}.log")))
            .expect("log file");
        let pki = self.dir.join("pki/portico");
        let child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join("portico/config.yaml"))
            .arg("--tls-cert")
            .arg(pki.join("tls.crt"))
            .arg("--tls-key")
            .arg(pki.join("tls.key"))
            .args(["--listen", &format!("127.0.0.1:{webhook_port}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
            .env("KUBECONFIG", self.dir.join("portico.kubeconfig"))
            .env("POD_NAME", pod_name)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("portico serve");
        let p = Portico { child, ops };
        eventually(30, &format!("portico {pod_name} ready"), || {
            p.ops_ok("/readyz").then_some(())
        });
        p
    }
}

fn component_pid(dir: &Path, name: &str) -> u32 {
    let file = dir.join(format!("{name}.pid"));
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", file.display()))
}

/// A control-plane component kept down by [`Cluster::kill_component`]; comes back when dropped,
/// so that a failing test does not leave the cluster without it.
pub struct Held {
    cluster_dir: PathBuf,
    name: String,
    hold: PathBuf,
}

impl Held {
    /// Lets the component start again and waits until cluster.sh has started it (not until it
    /// serves: see [`Cluster::wait_ready`]).
    pub fn resume(self) {
        let old = component_pid(&self.cluster_dir, &self.name);
        let _ = std::fs::remove_file(&self.hold);
        eventually(
            30,
            &format!("cluster.sh to start {} again", self.name),
            || (component_pid(&self.cluster_dir, &self.name) != old).then_some(()),
        );
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.hold);
    }
}

/// The body of a plain HTTP/1.0 GET on a loopback port, when it answers 200.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.lines().next().is_some_and(|l| l.contains(" 200")) {
        Ok(body.to_string())
    } else {
        Err(head.lines().next().unwrap_or("no answer").to_string())
    }
}

/// A sample's value in Prometheus text (`name` with its labels, as printed); 0 when absent.
pub fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A `portico serve` a test started.
pub struct Portico {
    pub child: std::process::Child,
    pub ops: u16,
}

impl Portico {
    /// GET on its ops port: true on HTTP 200.
    pub fn ops_ok(&self, path: &str) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.ops)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && buf.ends_with(b"200")
    }

    /// SIGTERM, as a Deployment's rollout would, then wait for it to exit.
    pub fn stop(mut self) {
        terminate(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to one process we started.
pub fn terminate(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

impl Cluster {
    /// Kills a control-plane component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`) with SIGKILL, as a crash would, and keeps it down while the
    /// returned [`Held`] lives (cluster.sh holds it while `hold-NAME` exists); dropping it, or
    /// [`Held::resume`], lets cluster.sh start it again.
    pub fn kill_component(&self, name: &str) -> Held {
        let hold = self.dir.join(format!("hold-{name}"));
        std::fs::write(&hold, "").expect("hold file");
        let held = Held {
            cluster_dir: self.dir.clone(),
            name: name.to_string(),
            hold,
        };
        let pid = self.component_pid(name);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let gone = || {
            // A zombie counts as gone: cluster.sh reaps it in its own time.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        };
        eventually(30, &format!("{name} to die"), || gone().then_some(()));
        held
    }

    fn component_pid(&self, name: &str) -> u32 {
        component_pid(&self.dir, name)
    }

    /// Waits until the apiserver answers `/readyz` (etcd included) as admin.
    pub fn wait_ready(&self, secs: u64) {
        eventually(secs, "the apiserver's /readyz", || {
            self.kubectl("admin", &["get", "--raw", "/readyz"], None)
                .ok
                .then_some(())
        });
    }

    /// The tail of one component's log, for failure messages.
    pub fn log_tail(&self, component: &str) -> String {
        tail(&self.dir.join(format!("{component}.log")), 30)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubectl `make test` installs; missing is a failure here, never a skip.
fn kubectl_path() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/kubectl/bin/kubectl"));
    assert!(
        path.exists(),
        "kubectl missing at {}: `make kubectl` installs it (`make test` does so first)",
        path.display()
    );
    path
}

/// A free loopback port (and, with `pair`, the one after it free too: etcd's peer port).
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

static CLUSTER: Mutex<Option<Result<&'static Cluster, String>>> = Mutex::new(None);

/// The cluster of this test binary, started on first use. A failed start fails every test that
/// asks, with the same message, without trying again.
pub fn cluster() -> &'static Cluster {
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let started = slot.get_or_insert_with(|| start().map(|c| &*Box::leak(Box::new(c))));
    match started {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn start() -> Result<Cluster, String> {
    let kubectl = kubectl_path();
    if let Some(dir) = std::env::var_os("PORTICO_E2E_CLUSTER") {
        let dir = PathBuf::from(dir);
        let kubeconfig = dir.join("kubeconfig");
        if !dir.join("ready").exists() {
            return Err(format!(
                "PORTICO_E2E_CLUSTER={}: no running cluster there (start one with `make cluster`)",
                dir.display()
            ));
        }
        return Ok(Cluster {
            dir,
            kubeconfig,
            kubectl,
        });
    }
    // Build (or find in the cache) first, without a deadline: a cold build takes minutes.
    let t = Instant::now();
    let build = Command::new(root().join("e2e/controlplane/build.sh"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("e2e/controlplane/build.sh: {e}"))?;
    if !build.status.success() {
        return Err(format!(
            "building the control plane failed (e2e/controlplane/build.sh):\n{}",
            String::from_utf8_lossy(&build.stderr)
        ));
    }
    eprintln!("e2e: control plane binaries ready in {:?}", t.elapsed());

    remove_stale_state();
    let base = std::env::temp_dir().join(format!("portico-e2e-{}", std::process::id()));
    let dir = base.join("cluster");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let log_path = base.join("cluster.sh.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{e}"))?;
    let t = Instant::now();
    let mut child = Command::new(root().join("e2e/controlplane/cluster.sh"))
        .env("CLUSTER_DIR", &dir)
        .env("CLUSTER_API_PORT", free_port(false).to_string())
        .env("CLUSTER_ETCD_PORT", free_port(true).to_string())
        .env("CLUSTER_WEBHOOK_PORT", free_port(false).to_string())
        .env("CLUSTER_OPS_PORT", free_port(false).to_string())
        .env("PORTICO", env!("CARGO_BIN_EXE_portico"))
        .env("KUBECTL", &kubectl)
        .env("PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| format!("{e}"))?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("e2e/controlplane/cluster.sh: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(START_SECS);
    while !dir.join("ready").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the e2e cluster did not start ({status}); {}:\n{}",
                log_path.display(),
                tail(&log_path, 40)
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "the e2e cluster was not ready within {START_SECS} s; {}:\n{}",
                log_path.display(),
                tail(&log_path, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "e2e: cluster ready in {:?} (state and logs in {})",
        t.elapsed(),
        dir.display()
    );
    Ok(Cluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        kubectl,
    })
}

/// The state of earlier runs (about 100 MB each, mostly etcd) whose test binary is gone: kept
/// until the next run so that a failure's logs can be read, then removed.
fn remove_stale_state() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("portico-e2e-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `secs` naming `what`.
pub fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
