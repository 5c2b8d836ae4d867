//! `portico-bench-cluster`: Portico on the real control plane (`e2e/controlplane/cluster.sh`:
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, with a release
//! Portico as webhook and provisioner, as its own service account).
//!
//! 1. Pod-create latency as the apiserver's client sees it, with Portico's webhooks in the path
//!    and without them (both configurations deleted): user1 creates pods one at a time, in
//!    alternating rounds (with, without, with, without), each pod timed from request to answer.
//! 2. The provisioner at scale: N labelled pods created by user1 (ten per tag, 16 requests in
//!    flight; kwok runs them), then one NodePort Exposure (target `all`) per tag. Measured: the
//!    time from the first pod until every Exposure's status is right, Portico's writes per
//!    object (its audit trail), its writes over a quiet period afterwards, its CPU time and peak
//!    RSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use portico::api::Exposure;
use portico_bench::{cpu_time, free_port, median, mib, peak_rss, percentile, reset_peak_rss};
use portico_bench::{table, write_file};
use serde_json::json;

const NS: &str = "team";

/// Measure Portico on the real control plane.
#[derive(Parser, Debug)]
#[command(name = "portico-bench-cluster")]
struct Args {
    /// The `portico` binary (a release build).
    #[arg(long, default_value = "target/release/portico")]
    portico: PathBuf,
    /// kubectl 1.37 (`make kubectl` installs it).
    #[arg(long, default_value = ".tools/kubectl/bin/kubectl", env = "KUBECTL")]
    kubectl: PathBuf,
    /// Pods created one at a time with the webhooks and as many without (0: skip this part).
    #[arg(long, default_value_t = 1000, env = "BENCH_CREATES")]
    creates: usize,
    /// The provisioner's scales, in pods (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000",
        env = "BENCH_CLUSTER_PODS"
    )]
    pods: Vec<usize>,
    /// Quiet period after convergence, in seconds.
    #[arg(long, default_value_t = 30, env = "BENCH_QUIET_SECONDS")]
    quiet_seconds: u64,
    /// Give up on a scale that has not converged after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
    /// Where the cluster's state and the results go.
    #[arg(long, default_value = "target/bench/cluster")]
    out: PathBuf,
}

/// cluster.sh and everything it started; stopped when dropped.
struct ClusterProc {
    child: Child,
    dir: PathBuf,
}

impl Drop for ClusterProc {
    fn drop(&mut self) {
        // SIGTERM: cluster.sh's exit trap stops the components.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cluster = start_cluster(&args)?;
    let report = runtime.block_on(run(&args, &cluster))?;
    print!("{report}");
    write_file(&args.out.join("cluster.md"), &report)?;
    Ok(())
}

fn start_cluster(args: &Args) -> anyhow::Result<ClusterProc> {
    let dir = std::fs::canonicalize(&args.out)?.join("cluster");
    let log_path = args.out.join("cluster.sh.log");
    let log = std::fs::File::create(&log_path)?;
    let port = || free_port().map(|a| a.port().to_string());
    // etcd's peer port is the client port + 1: pick one whose successor is free too.
    let etcd = loop {
        let p = free_port()?.port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let child = Command::new("e2e/controlplane/cluster.sh")
        .env("CLUSTER_DIR", &dir)
        .env("CLUSTER_API_PORT", port()?)
        .env("CLUSTER_ETCD_PORT", etcd.to_string())
        .env("CLUSTER_WEBHOOK_PORT", port()?)
        .env("CLUSTER_OPS_PORT", port()?)
        .env("PORTICO", std::fs::canonicalize(&args.portico)?)
        .env("KUBECTL", std::fs::canonicalize(&args.kubectl)?)
        .env("PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting e2e/controlplane/cluster.sh")?;
    let mut cluster = ClusterProc { child, dir };
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !cluster.dir.join("ready").exists() {
        if let Some(status) = cluster.child.try_wait()? {
            bail!(
                "the cluster did not start ({status}); see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster was not ready in time; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(cluster)
}

async fn client(dir: &Path, context: &str) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(dir.join("kubeconfig"))?;
    let options = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

fn portico_pid(dir: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(dir.join("portico.pid"))?;
    text.trim().parse().context("portico.pid")
}

async fn run(args: &Args, cluster: &ClusterProc) -> anyhow::Result<String> {
    let admin = client(&cluster.dir, "admin").await?;
    let user1 = client(&cluster.dir, "user1").await?;
    let mut out = format!(
        "\nPortico on the real control plane (Kubernetes v1.37, kwok as the kubelet) on {} cores\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.creates > 0 {
        let latency = latency(args, &admin, &user1).await?;
        eprintln!("{latency}");
        out.push_str(&latency);
    }
    let mut rows = Vec::new();
    for &pods in &args.pods {
        let s = scale(args, cluster, &admin, &user1, pods).await?;
        rows.push(s.row());
    }
    out.push_str("\nThe provisioner at scale (ten pods per tag, one NodePort Exposure per tag, target all):\n\n");
    out.push_str(&table(
        &[
            "pods",
            "Exposures",
            "pods created s",
            "converged s",
            "writes/Exposure",
            "writes by kind",
            "at rest: writes",
            "CPU s",
            "peak RSS MiB",
        ],
        &rows,
    ));
    Ok(out)
}

fn bench_pod(name: &str, tag: &str, run: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": run}, "annotations": {"portico.dev/ipaddr": tag}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))?)
}

/// Deletes this run's pods (grace 0) and waits until they are gone. At 10,000 pods one
/// `deletecollection` outlasts the apiserver's 60 s request timeout (504) and stops part way, so
/// it is sent again until nothing is left.
async fn delete_pods(admin: &Client, run: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let selector = ListParams::default().labels(&format!("bench={run}"));
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if let Err(e) = pods
            .delete_collection(&DeleteParams::default().grace_period(0), &selector)
            .await
        {
            eprintln!("deleting the pods of {run}: {e}; again");
        }
        if pods.list_metadata(&selector).await?.items.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pods of {run} still there after 1200 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether a pod made now comes back stamped by Portico: waits until it does (or does not).
async fn wait_for_webhook(user1: &Client, admin: &Client, present: bool) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(user1.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let made = pods
            .create(
                &PostParams::default(),
                &bench_pod(&format!("probe-{i}"), "probe", "probe")?,
            )
            .await?;
        let stamped = made
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("jarvice-job-ipaddr");
        if stamped == present {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the webhooks' {} did not take effect within 60 s",
                if present { "registration" } else { "removal" }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    delete_pods(admin, "probe").await
}

/// Pod-create latency with and without the webhooks, in alternating rounds.
async fn latency(args: &Args, admin: &Client, user1: &Client) -> anyhow::Result<String> {
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let mut m = mutating.get("portico").await?;
    let mut v = validating.get("portico").await?;
    for meta in [&mut m.metadata, &mut v.metadata] {
        meta.resource_version = None;
        meta.uid = None;
        meta.creation_timestamp = None;
        meta.managed_fields = None;
        meta.generation = None;
    }
    let pods: Api<Pod> = Api::namespaced(user1.clone(), NS);
    let mut with = Vec::new();
    let mut without = Vec::new();
    let per_round = args.creates.div_ceil(2);
    for round in 0..4 {
        let webhooks = round % 2 == 0;
        if webhooks && round > 0 {
            mutating.create(&PostParams::default(), &m).await?;
            validating.create(&PostParams::default(), &v).await?;
        }
        if !webhooks {
            mutating.delete("portico", &DeleteParams::default()).await?;
            validating
                .delete("portico", &DeleteParams::default())
                .await?;
        }
        wait_for_webhook(user1, admin, webhooks).await?;
        let run = format!("lat{round}");
        for i in 0..per_round {
            let pod = bench_pod(&format!("{run}-{i}"), "lat", &run)?;
            let t = Instant::now();
            pods.create(&PostParams::default(), &pod).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if webhooks {
                with.push(ms)
            } else {
                without.push(ms)
            }
        }
        delete_pods(admin, &run).await?;
    }
    mutating.create(&PostParams::default(), &m).await?;
    validating.create(&PostParams::default(), &v).await?;
    wait_for_webhook(user1, admin, true).await?;
    let row = |name: &str, values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        vec![
            name.to_string(),
            values.len().to_string(),
            format!("{:.2}", median(values)),
            format!("{:.2}", percentile(values, 99.0)),
            format!("{:.2}", values.last().copied().unwrap_or(0.0)),
        ]
    };
    let rows = vec![
        row("with Portico's webhooks", &mut with),
        row("without", &mut without),
    ];
    let ratio = median(&with) / median(&without).max(1e-9);
    Ok(format!(
        "Pod creation as user1, one at a time (rounds alternate with / without, {per_round} pods each):\n\n{}\nmedian with ÷ without: {ratio:.2}\n",
        table(&["", "creates", "p50 ms", "p99 ms", "max ms"], &rows)
    ))
}

#[derive(Debug)]
struct Scale {
    pods: usize,
    exposures: usize,
    create_seconds: f64,
    converge_seconds: f64,
    writes: BTreeMap<String, u64>,
    quiet_writes: u64,
    quiet_seconds: u64,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
}

impl Scale {
    fn row(&self) -> Vec<String> {
        let total: u64 = self.writes.values().sum();
        let kinds: Vec<String> = self
            .writes
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        vec![
            self.pods.to_string(),
            self.exposures.to_string(),
            format!("{:.1}", self.create_seconds),
            format!("{:.1}", self.converge_seconds),
            format!("{:.2}", total as f64 / self.exposures.max(1) as f64),
            kinds.join(", "),
            format!("{} in {} s", self.quiet_writes, self.quiet_seconds),
            format!("{:.1}", self.cpu_seconds),
            mib(self.peak_rss_bytes),
        ]
    }
}

/// The provisioner's audit records so far: (line count, writes by kind and outcome).
fn audit(dir: &Path) -> (usize, Vec<String>) {
    let log = std::fs::read_to_string(dir.join("portico.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let records = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["source"] == "provisioner")
        .map(|r| {
            format!(
                "{} {}",
                r["object"]["kind"].as_str().unwrap_or("?"),
                r["outcome"].as_str().unwrap_or("?")
            )
        })
        .collect();
    (lines.len(), records)
}

async fn scale(
    args: &Args,
    cluster: &ClusterProc,
    admin: &Client,
    user1: &Client,
    pods: usize,
) -> anyhow::Result<Scale> {
    let pid = portico_pid(&cluster.dir)?;
    let tags = pods.div_ceil(10);
    let run = format!("scale{pods}");
    let tag = |t: usize| format!("s{pods}t{t}");
    let (_, before) = audit(&cluster.dir);
    reset_peak_rss(pid);
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::with_capacity(pods);
    for i in 0..pods {
        let permit = in_flight.clone().acquire_owned().await?;
        let api: Api<Pod> = Api::namespaced(user1.clone(), NS);
        let pod = bench_pod(&format!("{run}-{i}"), &tag(i / 10), &run)?;
        tasks.push(tokio::spawn(async move {
            let result = api.create(&PostParams::default(), &pod).await.map(|_| ());
            drop(permit);
            result
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_seconds = started.elapsed().as_secs_f64();
    let exposures: Api<Exposure> = Api::namespaced(user1.clone(), NS);
    for t in 0..tags {
        let e: Exposure = serde_json::from_value(json!({
            "apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
            "metadata": {"name": tag(t), "labels": {"bench": run}},
            "spec": {"tag": tag(t), "target": "all", "service": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}}
        }))?;
        exposures.create(&PostParams::default(), &e).await?;
    }
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let selector = ListParams::default().labels(&format!("bench={run}"));
    loop {
        let list = exposures.list(&selector).await?;
        let right = list
            .items
            .iter()
            .filter(|e| {
                e.status.as_ref().is_some_and(|s| {
                    s.pods == 10
                        && !s.node_ports.is_empty()
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if right == tags {
            break;
        }
        if Instant::now() > deadline {
            let sample = list
                .items
                .iter()
                .find_map(|e| e.status.as_ref().map(|s| format!("{:?}", s.conditions)));
            bail!(
                "{pods} pods: after {} s only {right}/{tags} Exposures are right; one of them: {}",
                args.timeout_seconds,
                sample.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converge_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_time(pid)?.saturating_sub(cpu_before).as_secs_f64();
    let (_, converged) = audit(&cluster.dir);
    tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
    let (_, after_quiet) = audit(&cluster.dir);
    let peak_rss_bytes = peak_rss(pid)?;
    let mut writes = BTreeMap::new();
    for r in &converged[before.len()..] {
        *writes.entry(r.clone()).or_insert(0) += 1;
    }
    let quiet_writes = (after_quiet.len() - converged.len()) as u64;
    let measured = Scale {
        pods,
        exposures: tags,
        create_seconds,
        converge_seconds,
        writes,
        quiet_writes,
        quiet_seconds: args.quiet_seconds,
        cpu_seconds,
        peak_rss_bytes,
    };
    // Shown before the cleanup, which takes minutes at 10,000 pods.
    eprintln!("{pods} pods: {measured:?}");
    // Clean up for the next scale: the Exposures (their Services go with them) and the pods.
    if let Err(e) = Api::<Exposure>::namespaced(admin.clone(), NS)
        .delete_collection(&DeleteParams::default(), &selector)
        .await
    {
        eprintln!("deleting the Exposures of {run}: {e}");
    }
    delete_pods(admin, &run).await?;
    Ok(measured)
}
