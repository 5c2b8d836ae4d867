//! `portico-bench-provisioner`: the provisioner at scale, against the sandbox API server.
//!
//! For each scale (by default 100, 1,000 and 10,000 pods, ten per tag, one Exposure per tag) it
//! starts a fresh sandbox in this process and `portico serve --no-webhook` as a separate process
//! that reaches it through an ordinary kubeconfig as Portico's service account — so the peak RSS
//! and CPU time measured are Portico's alone. It creates the labelled, running pods and then the
//! Exposures (NodePort, target `all`), and measures: the time from the first creation until every
//! Service exists and every Exposure's status is correct (the Service named, node ports assigned,
//! ten pods counted, `Ready`); the API requests Portico issued (sandbox counters for its user,
//! Lease renewals counted apart) per Exposure; the requests and writes over a quiet period
//! afterwards (must be zero writes); Portico's CPU time and peak RSS. It prints one row per scale
//! and how each figure grows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use kube::CustomResourceExt;
use portico::api::Exposure;
use portico_bench::{cpu_time, mib, peak_rss, rss, table, write_file};
use portico_sandbox::{Counters, Sandbox, SandboxHandle, SandboxOptions};
use serde::Serialize;
use serde_json::{json, Value};

const NS: &str = "bench";

/// Measure the provisioner at 100 to 10,000 pods.
#[derive(Parser, Debug)]
#[command(name = "portico-bench-provisioner")]
struct Args {
    /// The `portico` binary (a release build).
    #[arg(long, default_value = "target/release/portico")]
    portico: PathBuf,
    /// The scales, in pods (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,10000",
        env = "BENCH_PODS"
    )]
    pods: Vec<usize>,
    /// Pods per tag; one Exposure per tag.
    #[arg(long, default_value_t = 10)]
    pods_per_tag: usize,
    /// Quiet period after convergence at the largest scale, in seconds.
    #[arg(long, default_value_t = 60, env = "BENCH_QUIET_SECONDS")]
    quiet_seconds: u64,
    /// Quiet period at the smaller scales, in seconds.
    #[arg(long, default_value_t = 10)]
    small_quiet_seconds: u64,
    /// Give up on a scale that has not converged after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Where kubeconfigs, Portico's logs and the results go.
    #[arg(long, default_value = "target/bench/provisioner")]
    out: PathBuf,
}

/// What one scale measured.
#[derive(Debug, Clone, Serialize)]
struct Scale {
    pods: usize,
    exposures: usize,
    /// Seconds the driver took to create the pods (with their running status) and Exposures.
    create_seconds: f64,
    /// Seconds from the first creation until everything was correct.
    converge_seconds: f64,
    /// Requests by Portico until convergence, Lease renewals excluded, by verb.
    requests_by_verb: BTreeMap<String, u64>,
    requests: u64,
    writes: u64,
    lease_requests: u64,
    quiet_seconds: u64,
    quiet_requests: u64,
    quiet_writes: u64,
    quiet_lease_requests: u64,
    /// Portico's CPU time from the first creation to convergence.
    cpu_seconds: f64,
    peak_rss_bytes: u64,
    rss_at_rest_bytes: u64,
}

/// Portico's process; killed when dropped.
struct Portico(Child);

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let largest = args.pods.iter().copied().max().unwrap_or(0);
    let mut scales = Vec::new();
    for &pods in &args.pods {
        let quiet = if pods == largest {
            args.quiet_seconds
        } else {
            args.small_quiet_seconds
        };
        let scale = runtime.block_on(run_scale(&args, pods, quiet))?;
        eprintln!(
            "{} pods: converged in {:.2} s, {} writes, {} requests, {} writes at rest, peak RSS {} MiB",
            scale.pods,
            scale.converge_seconds,
            scale.writes,
            scale.requests,
            scale.quiet_writes,
            mib(scale.peak_rss_bytes)
        );
        scales.push(scale);
    }
    let report = report(&args, &scales);
    print!("{report}");
    write_file(&args.out.join("provisioner.md"), &report)?;
    let json = serde_json::to_string_pretty(&scales).context("encoding the results")?;
    write_file(&args.out.join("provisioner.json"), &json)?;
    Ok(())
}

async fn run_scale(args: &Args, pods: usize, quiet_seconds: u64) -> anyhow::Result<Scale> {
    let tags = pods.div_ceil(args.pods_per_tag);
    let sandbox = Sandbox::start(SandboxOptions {
        namespaces: vec!["portico-system".into(), NS.into()],
        // Every pod is created and then marked running: keep the events of the whole run, so a
        // watch that falls behind resumes instead of relisting.
        watch_window: 4 * pods + 10_000,
        // The driver plays the kubelet (it writes each pod's running status itself), so the
        // sandbox's own controllers, which pass over every pod on every change, stay out of the
        // measurement.
        controllers: false,
        node_port_range: (30000, 32767),
        ..SandboxOptions::default()
    })
    .await?;
    let sb = sandbox.handle();
    sb.apply_object(
        "admin",
        serde_json::to_value(Exposure::crd()).context("encoding the CRD")?,
    )
    .await?;
    let dir = args.out.join(format!("{pods}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    write_file(&kubeconfig, &sb.kubeconfig_yaml("portico"))?;
    let portico = start_portico(&args.portico, &kubeconfig, &dir.join("portico.log"))?;
    let pid = portico.0.id();
    wait_for_leader(&sb, Duration::from_secs(30)).await?;
    // Let the watches settle on the empty world before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let baseline = sb.counters();
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    for i in 0..pods {
        create_pod(&sb, i / args.pods_per_tag, i).await?;
    }
    for t in 0..tags {
        create_exposure(&sb, t).await?;
    }
    let create_seconds = started.elapsed().as_secs_f64();

    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let expected_pods = |t: usize| (pods - t * args.pods_per_tag).min(args.pods_per_tag);
    loop {
        let (services, statuses) = progress(&sb, tags, expected_pods);
        if services == tags && statuses == tags {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{pods} pods: after {} s only {services}/{tags} Services and {statuses}/{tags} statuses are right (Portico's log: {})",
                args.timeout_seconds,
                dir.join("portico.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converge_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_time(pid)?.saturating_sub(cpu_before).as_secs_f64();
    let converged = sb.counters();
    let (requests_by_verb, lease_requests) = portico_requests(&converged.since(&baseline));

    tokio::time::sleep(Duration::from_secs(quiet_seconds)).await;
    let (quiet_by_verb, quiet_lease_requests) = portico_requests(&sb.counters().since(&converged));
    let peak_rss_bytes = peak_rss(pid)?;
    let rss_at_rest_bytes = rss(pid)?;
    drop(portico);
    sandbox.shutdown().await;

    Ok(Scale {
        pods,
        exposures: tags,
        create_seconds,
        converge_seconds,
        requests: requests_by_verb.values().sum(),
        writes: writes(&requests_by_verb),
        requests_by_verb,
        lease_requests,
        quiet_seconds,
        quiet_requests: quiet_by_verb.values().sum(),
        quiet_writes: writes(&quiet_by_verb),
        quiet_lease_requests,
        cpu_seconds,
        peak_rss_bytes,
        rss_at_rest_bytes,
    })
}

fn start_portico(bin: &Path, kubeconfig: &Path, log: &Path) -> anyhow::Result<Portico> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(bin)
        .args(["serve", "--no-webhook"])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", "portico-bench")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Portico(child))
}

/// Waits until Portico holds its Lease (it reconciles only then).
async fn wait_for_leader(sb: &SandboxHandle, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let holder = sb
            .object(
                "coordination.k8s.io",
                "leases",
                "portico-system",
                "portico-provisioner",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
        if holder.is_some_and(|h| !h.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Portico did not take its Lease within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tag_name(t: usize) -> String {
    format!("tag{t}")
}

/// A pod as Portico's webhook would have stamped it for user1, then running and ready.
async fn create_pod(sb: &SandboxHandle, tag: usize, i: usize) -> anyhow::Result<()> {
    let tag = tag_name(tag);
    let name = format!("{tag}-pod{i}");
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "bench",
                "jarvice-job-ipaddr": format!("user1-{tag}"),
                "portico.dev/owner": "user1",
            },
            "annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": tag},
        },
        "spec": {"containers": [{"name": "main", "image": "registry.example.org/notebook:1",
            "ports": [{"name": "http", "containerPort": 8888}]}]},
    });
    let created = sb
        .request(
            "admin",
            "POST",
            &format!("/api/v1/namespaces/{NS}/pods"),
            Some(pod),
        )
        .await;
    if created.code != 201 {
        bail!("creating pod {name}: {} {}", created.code, created.body);
    }
    let status = json!({"status": {
        "phase": "Running",
        "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 1),
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    let marked = sb
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{name}/status"),
            Some(status),
        )
        .await;
    if marked.code != 200 {
        bail!(
            "marking pod {name} running: {} {}",
            marked.code,
            marked.body
        );
    }
    Ok(())
}

async fn create_exposure(sb: &SandboxHandle, t: usize) -> anyhow::Result<()> {
    let tag = tag_name(t);
    let exposure = json!({
        "apiVersion": "portico.dev/v1alpha1",
        "kind": "Exposure",
        "metadata": {"name": tag, "namespace": NS},
        "spec": {"tag": tag, "user": "user1", "target": "all",
            "service": {"type": "NodePort", "ports": [{"name": "http", "port": 8888}]}},
    });
    let created = sb
        .request(
            "admin",
            "POST",
            &format!("/apis/portico.dev/v1alpha1/namespaces/{NS}/exposures"),
            Some(exposure),
        )
        .await;
    if created.code != 201 {
        bail!("creating Exposure {tag}: {} {}", created.code, created.body);
    }
    Ok(())
}

/// How many Services exist with the right selector, and how many Exposure statuses are right.
/// Reads the store borrowed: the check runs every 200 ms while the sandbox serves Portico in this
/// process, and cloning every Service and Exposure each time would compete with it.
fn progress(
    sb: &SandboxHandle,
    tags: usize,
    expected_pods: impl Fn(usize) -> usize,
) -> (usize, usize) {
    let tag_of = |o: &Value| -> Option<usize> {
        let t = o["metadata"]["name"]
            .as_str()?
            .strip_prefix("tag")?
            .parse()
            .ok()?;
        (t < tags).then_some(t)
    };
    let mut services_ok = 0;
    sb.for_each_object("", "services", Some(NS), |s| {
        let Some(t) = tag_of(s) else { return };
        if s["spec"]["selector"]["jarvice-job-ipaddr"] == format!("user1-{}", tag_name(t))
            && s["spec"]["ports"][0]["nodePort"].is_number()
        {
            services_ok += 1;
        }
    });
    let mut statuses_ok = 0;
    sb.for_each_object("portico.dev", "exposures", Some(NS), |e| {
        let Some(t) = tag_of(e) else { return };
        let status = &e["status"];
        if status["service"] == tag_name(t)
            && status["pods"].as_u64() == Some(expected_pods(t) as u64)
            && status["nodePorts"]["http"].is_number()
            && status["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        {
            statuses_ok += 1;
        }
    });
    (services_ok, statuses_ok)
}

/// Portico's requests by verb (Lease renewals apart), and its Lease requests.
fn portico_requests(counters: &Counters) -> (BTreeMap<String, u64>, u64) {
    let mut by_verb = BTreeMap::new();
    let mut lease = 0;
    for (k, n) in &counters.counts {
        if k.user != portico_sandbox::PORTICO_USER {
            continue;
        }
        if k.resource.starts_with("leases") {
            lease += n;
        } else {
            *by_verb.entry(k.verb.clone()).or_insert(0) += n;
        }
    }
    (by_verb, lease)
}

fn writes(by_verb: &BTreeMap<String, u64>) -> u64 {
    portico_sandbox::faults::WRITE_VERBS
        .iter()
        .filter_map(|v| by_verb.get(*v))
        .sum()
}

fn report(args: &Args, scales: &[Scale]) -> String {
    let mut out = format!(
        "\nProvisioner scale: {} pods per tag, one NodePort Exposure (target all) per tag; Portico as a separate process against the sandbox on {} cores\n\n",
        args.pods_per_tag,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let rows: Vec<Vec<String>> = scales
        .iter()
        .map(|s| {
            let verbs: Vec<String> = s
                .requests_by_verb
                .iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect();
            vec![
                s.pods.to_string(),
                s.exposures.to_string(),
                format!("{:.2}", s.create_seconds),
                format!("{:.2}", s.converge_seconds),
                format!("{:.2}", s.writes as f64 / s.exposures as f64),
                format!("{:.2}", s.requests as f64 / s.exposures as f64),
                verbs.join(", "),
                format!(
                    "{} / {} in {} s (+{} lease)",
                    s.quiet_writes, s.quiet_requests, s.quiet_seconds, s.quiet_lease_requests
                ),
                format!("{:.2}", s.cpu_seconds),
                mib(s.peak_rss_bytes),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "pods",
            "Exposures",
            "create s",
            "converged s",
            "writes/Exposure",
            "requests/Exposure",
            "requests by verb",
            "at rest: writes / requests",
            "CPU s",
            "peak RSS MiB",
        ],
        &rows,
    ));
    if let Some(first) = scales.first() {
        out.push_str("\nGrowth relative to the smallest scale (pods ×, converge time ×, CPU ×, RSS above the smallest):\n");
        for s in scales {
            out.push_str(&format!(
                "- {} pods: {:.0}× pods, {:.1}× time, {:.1}× CPU, +{} MiB\n",
                s.pods,
                s.pods as f64 / first.pods as f64,
                s.converge_seconds / first.converge_seconds,
                s.cpu_seconds / first.cpu_seconds.max(1e-3),
                mib(s.peak_rss_bytes.saturating_sub(first.peak_rss_bytes)),
            ));
        }
    }
    out
}
