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
