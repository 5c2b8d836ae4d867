//! The `portico-sandbox` binary: starts the sandbox API server in the foreground, writes a
//! kubeconfig, optionally applies manifests, and runs until interrupted.

use anyhow::Context;
use clap::Parser;
use portico_sandbox::{auth, Sandbox, SandboxOptions};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A local, stateful Kubernetes API server (HTTP on loopback) for Portico's tests and demos.
#[derive(Debug, Parser)]
#[command(name = "portico-sandbox", version)]
struct Cli {
    /// Address to listen on (use port 0 for a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write a kubeconfig here (contexts admin, user1, user2, portal, portico).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where a webhook service is reached: NAMESPACE/NAME=HOST:PORT (repeatable).
    #[arg(long = "service-endpoint", value_name = "NS/NAME=HOST:PORT")]
    service_endpoints: Vec<String>,
    /// YAML manifests to apply as admin at start (repeatable; multi-document files allowed).
    #[arg(long = "apply", value_name = "FILE")]
    apply: Vec<PathBuf>,
    /// Extra namespaces to create at start (repeatable).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Delay before the kubelet stand-in moves a pod to Running.
    #[arg(long, default_value_t = 300)]
    kubelet_delay_ms: u64,
    /// Pods of Jobs succeed after running this long (default: they keep running).
    #[arg(long)]
    pod_succeed_after_ms: Option<u64>,
    /// Events kept for watch resumption (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    watch_window: usize,
    /// Interval between watch bookmarks.
    #[arg(long, default_value_t = 5_000)]
    bookmark_interval_ms: u64,
    /// Load-balancer address pool: FIRST-LAST or a comma-separated list of IPv4 addresses.
    #[arg(long, default_value = "192.0.2.10-192.0.2.60")]
    lb_pool: String,
    /// NodePort range, LOW-HIGH.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// Static token file (token,user,uid,"group1,group2" per line) replacing the built-in table.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Do not run the Job/StatefulSet/Deployment controllers and the kubelet stand-in.
    #[arg(long)]
    no_controllers: bool,
    /// Seed for generated names and uids.
    #[arg(long)]
    seed: Option<u64>,
    /// An image the kubelet stand-in pretends to run (repeatable; replaces the default list:
    /// busybox, nginx, python, alpine, quay.io/jupyter/*). A repository (`busybox`), a reference
    /// with its tag (`portico:0.1.0`), or a prefix ending in `*` (`*` alone: every image). Pods of
    /// other images stay Pending with ErrImagePull: nothing runs in the sandbox.
    #[arg(long = "image", value_name = "IMAGE")]
    images: Vec<String>,
    /// Log filter (e.g. info, debug, portico_sandbox=debug).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn parse_pool(s: &str) -> anyhow::Result<Vec<String>> {
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().context("pool start")?;
        let b: Ipv4Addr = b.trim().parse().context("pool end")?;
        let (a, b) = (u32::from(a), u32::from(b));
        anyhow::ensure!(a <= b && b - a < 65_536, "bad pool range");
        return Ok((a..=b).map(|n| Ipv4Addr::from(n).to_string()).collect());
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<Ipv4Addr>()
                .map(|ip| ip.to_string())
                .with_context(|| format!("bad address {x}"))
        })
        .collect()
}

fn parse_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("want LOW-HIGH")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a <= b, "LOW must not exceed HIGH");
    Ok((a, b))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let mut endpoints = BTreeMap::new();
    for e in &cli.service_endpoints {
        let (svc, addr) = e
            .split_once('=')
            .with_context(|| format!("--service-endpoint {e}: want NS/NAME=HOST:PORT"))?;
        anyhow::ensure!(
            svc.contains('/'),
            "--service-endpoint {e}: want NS/NAME=HOST:PORT"
        );
        endpoints.insert(svc.to_string(), addr.to_string());
    }
    let tokens = match &cli.token_file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            auth::parse_token_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => auth::default_tokens(),
    };
    let opts = SandboxOptions {
        listen: cli.listen,
        service_endpoints: endpoints,
        watch_window: cli.watch_window,
        kubelet_delay: Duration::from_millis(cli.kubelet_delay_ms),
        pod_succeed_after: cli.pod_succeed_after_ms.map(Duration::from_millis),
        images: if cli.images.is_empty() {
            portico_sandbox::images::CLI_DEFAULT
                .iter()
                .map(|i| i.to_string())
                .collect()
        } else {
            cli.images.clone()
        },
        bookmark_interval: Duration::from_millis(cli.bookmark_interval_ms.max(100)),
        lb_pool: parse_pool(&cli.lb_pool)?,
        node_port_range: parse_range(&cli.node_port_range)?,
        tokens,
        controllers: !cli.no_controllers,
        seed: cli.seed,
        namespaces: cli.namespaces.clone(),
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(opts).await?;
    for f in &cli.apply {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let objs = sb.apply_yaml("admin", &text).await?;
        eprintln!("applied {} object(s) from {}", objs.len(), f.display());
    }
    if let Some(p) = &cli.kubeconfig {
        sb.write_kubeconfig(p)?;
        eprintln!("kubeconfig written to {}", p.display());
    }
    println!("portico-sandbox listening on {}", sb.url());
    println!("contexts: admin, user1, user2, portal, portico   (kubectl --kubeconfig <file> --context user1 get pods)");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sb.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_ranges() {
        assert_eq!(parse_pool("10.0.0.1-10.0.0.3").unwrap().len(), 3);
        assert_eq!(
            parse_pool("1.2.3.4, 5.6.7.8").unwrap(),
            vec!["1.2.3.4", "5.6.7.8"]
        );
        assert!(parse_pool("x").is_err());
        assert_eq!(parse_range("30000-30010").unwrap(), (30000, 30010));
    }
}
