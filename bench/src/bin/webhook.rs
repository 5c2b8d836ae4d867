//! `portico-bench-webhook`: Portico's `/mutate` against the limit server, under the same load.
//!
//! Starts `portico serve --no-controller` and `portico-limit-server` as separate processes on
//! loopback with the same certificate, then drives both with `h2load` (nghttp2) using the same
//! realistic Pod CREATE review, alternating Portico and the limit server (A B A B) so that both
//! see the same machine conditions, over HTTP/1.1 keep-alive and over HTTP/2, each with the same
//! number of requests in flight. For every run it records requests per second, the latency
//! percentiles from h2load's per-request log, errors, the server's CPU time per request (from
//! `/proc/PID/stat`) and its peak RSS (`VmHWM`, reset before each run), and prints medians over
//! the rounds with Portico's ratio to the limit server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico_bench::{
    cpu_time, free_port, median, mib, peak_rss, percentile, reset_peak_rss, table, wait_for_port,
    write_file, POD_CREATE,
};
use serde::Serialize;

/// Drive Portico's webhook and the limit server with h2load and compare them.
#[derive(Parser, Debug)]
#[command(name = "portico-bench-webhook")]
struct Args {
    /// The `portico` binary (a release build).
    #[arg(long, default_value = "target/release/portico")]
    portico: PathBuf,
    /// The `portico-limit-server` binary (a release build).
    #[arg(long, default_value = "target/release/portico-limit-server")]
    limit_server: PathBuf,
    /// The h2load binary.
    #[arg(long, default_value = "h2load")]
    h2load: PathBuf,
    /// Where the review, certificates, logs and results go.
    #[arg(long, default_value = "target/bench/webhook")]
    out: PathBuf,
    /// Rounds of A B A B; the figures are medians over them.
    #[arg(long, default_value_t = 3, env = "BENCH_ROUNDS")]
    rounds: usize,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 8, env = "BENCH_SECONDS")]
    seconds: u64,
    /// Seconds of the unmeasured warm-up before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// HTTP/2 connections (the in-flight requests are spread over them as streams).
    #[arg(long, default_value_t = 4)]
    h2_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Proto {
    #[serde(rename = "HTTP/1.1")]
    Http1,
    #[serde(rename = "HTTP/2")]
    Http2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::Http2 => "HTTP/2",
        }
    }
}

/// One measured h2load run against one server.
#[derive(Debug, Clone, Serialize)]
struct Run {
    server: &'static str,
    proto: Proto,
    round: usize,
    requests_per_second: f64,
    succeeded: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    peak_rss_bytes: u64,
}

/// A server process under test; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let h2load_version = Command::new(&args.h2load)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install nghttp2-client)",
                args.h2load.display()
            )
        })?;
    let h2load_version = String::from_utf8_lossy(&h2load_version.stdout)
        .trim()
        .to_string();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .with_context(|| format!("resolving {}", args.out.display()))?;

    // The review, and the exact answer Portico gives it, which the limit server sends back
    // verbatim: both servers put the same bytes on the wire.
    let review = out.join("pod-create.json");
    write_file(&review, POD_CREATE)?;
    let answer = Webhook::new(Config::default())
        .answer(Endpoint::Mutate, POD_CREATE.as_bytes())
        .map_err(|e| anyhow::anyhow!("the fixture is not a review: {e}"))?;
    if !(answer.summary.allowed && answer.summary.mutated) {
        bail!(
            "the fixture should be allowed with a patch: {:?}",
            answer.summary
        );
    }
    let answer_path = out.join("answer.json");
    std::fs::write(&answer_path, &answer.body)
        .with_context(|| format!("writing {}", answer_path.display()))?;

    let certs = out.join("certs");
    let made = Command::new(&args.portico)
        .args([
            "certs",
            "--service",
            "portico",
            "--namespace",
            "portico-system",
        ])
        .args(["--host", "127.0.0.1", "--host", "localhost", "--out"])
        .arg(&certs)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {} certs", args.portico.display()))?;
    if !made.success() {
        bail!("portico certs failed: {made}");
    }
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));

    let portico = start_portico(&args.portico, &cert, &key)?;
    let limit = start_limit(&args.limit_server, &cert, &key, &answer_path)?;

    for server in [&portico, &limit] {
        let (ok, _) = h2load(
            &args,
            server,
            Proto::Http1,
            &review,
            Load::Requests(1),
            None,
        )?;
        if ok.succeeded != 1 || ok.errors != 0 {
            bail!("{} did not answer a single review with 2xx", server.name);
        }
    }

    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for proto in [Proto::Http1, Proto::Http2] {
            for server in [&portico, &limit] {
                h2load(
                    &args,
                    server,
                    proto,
                    &review,
                    Load::Seconds(args.warmup),
                    None,
                )?;
                let pid = server.child.id();
                reset_peak_rss(pid);
                let before = cpu_time(pid)?;
                let log = out.join(format!(
                    "{}-{}-{round}.log",
                    server.name,
                    if proto == Proto::Http1 { "h1" } else { "h2" }
                ));
                let (figures, latencies) = h2load(
                    &args,
                    server,
                    proto,
                    &review,
                    Load::Seconds(args.seconds),
                    Some(&log),
                )?;
                let cpu = cpu_time(pid)?.saturating_sub(before);
                let run = Run {
                    server: server.name,
                    proto,
                    round,
                    requests_per_second: figures.requests_per_second,
                    succeeded: figures.succeeded,
                    errors: figures.errors,
                    p50_ms: percentile(&latencies, 50.0) / 1000.0,
                    p99_ms: percentile(&latencies, 99.0) / 1000.0,
                    cpu_us_per_request: cpu.as_micros() as f64 / figures.succeeded.max(1) as f64,
                    peak_rss_bytes: peak_rss(pid)?,
                };
                eprintln!(
                    "round {round} {:<8} {:<7}: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  {} errors  {:.1} µs CPU/req  {} MiB peak",
                    proto.name(),
                    run.server,
                    run.requests_per_second,
                    run.p50_ms,
                    run.p99_ms,
                    run.errors,
                    run.cpu_us_per_request,
                    mib(run.peak_rss_bytes)
                );
                // The per-request logs are large and already summarised.
                let _ = std::fs::remove_file(&log);
                runs.push(run);
            }
        }
    }
    drop(portico);
    drop(limit);

    let report = report(&args, &runs, &h2load_version);
    print!("{report}");
    write_file(&out.join("webhook.md"), &report)?;
    let json = serde_json::to_string_pretty(&runs).context("encoding the runs")?;
    write_file(&out.join("webhook.json"), &json)?;
    Ok(())
}

fn start_portico(bin: &Path, cert: &Path, key: &Path) -> anyhow::Result<Server> {
    let (listen, ops) = (free_port()?, free_port()?);
    let child = Command::new(bin)
        .args(["serve", "--no-controller", "--shutdown-delay", "0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args([
            "--listen",
            &listen.to_string(),
            "--ops-listen",
            &ops.to_string(),
        ])
        // Logging stays at its default (one line per decision at info): its cost is part of
        // Portico's. The lines themselves are thrown away.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = Server {
        name: "portico",
        child,
        url: format!("https://127.0.0.1:{}/mutate", listen.port()),
    };
    wait_for_port(listen, Duration::from_secs(20))?;
    Ok(server)
}

fn start_limit(bin: &Path, cert: &Path, key: &Path, answer: &Path) -> anyhow::Result<Server> {
    let listen = free_port()?;
    let child = Command::new(bin)
        .args(["--listen", &listen.to_string()])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--answer")
        .arg(answer)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = Server {
        name: "limit",
        child,
        url: format!("https://127.0.0.1:{}/mutate", listen.port()),
    };
    wait_for_port(listen, Duration::from_secs(20))?;
    Ok(server)
}

enum Load {
    Requests(u64),
    Seconds(u64),
}

/// What h2load's summary says.
#[derive(Debug, Default)]
struct Figures {
    requests_per_second: f64,
    succeeded: u64,
    errors: u64,
}

/// Runs h2load; returns its summary and, when `log` is given, the sorted latencies (µs) of the
/// requests answered 2xx.
fn h2load(
    args: &Args,
    server: &Server,
    proto: Proto,
    review: &Path,
    load: Load,
    log: Option<&Path>,
) -> anyhow::Result<(Figures, Vec<f64>)> {
    let mut cmd = Command::new(&args.h2load);
    let (connections, streams) = match proto {
        Proto::Http1 => (args.in_flight, 1),
        Proto::Http2 => {
            let c = args.h2_connections.clamp(1, args.in_flight);
            (c, args.in_flight.div_ceil(c))
        }
    };
    if proto == Proto::Http1 {
        cmd.arg("--h1");
    }
    match load {
        Load::Requests(n) => cmd.args(["-n", &n.to_string(), "-c", "1", "-m", "1"]),
        Load::Seconds(s) => cmd.args([
            "-D",
            &s.to_string(),
            "-c",
            &connections.to_string(),
            "-m",
            &streams.to_string(),
        ]),
    };
    cmd.args(["-t", "1", "-H", "content-type: application/json", "-d"])
        .arg(review);
    if let Some(log) = log {
        cmd.arg("--log-file").arg(log);
    }
    cmd.arg(&server.url);
    let output = cmd
        .output()
        .with_context(|| format!("running {}", args.h2load.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load against {} failed ({}): {stdout}{}",
            server.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let figures =
        parse_summary(&stdout).with_context(|| format!("unexpected h2load output:\n{stdout}"))?;
    let latencies = match log {
        Some(log) => read_latencies(log)?,
        None => Vec::new(),
    };
    Ok((figures, latencies))
}

/// Reads `finished in …, N req/s`, `requests: … N succeeded, N failed, N errored, N timeout`
/// and `status codes: N 2xx, …`.
fn parse_summary(stdout: &str) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    let number_before = |line: &str, word: &str| -> Option<f64> {
        let at = line.find(word)?;
        line[..at]
            .split([' ', ','])
            .rfind(|t| !t.is_empty())?
            .parse()
            .ok()
    };
    let mut seen = (false, false, false);
    let mut two_xx = 0u64;
    let mut other_status = 0u64;
    for line in stdout.lines() {
        if line.starts_with("finished in") {
            figures.requests_per_second =
                number_before(line, " req/s").context("no req/s figure")?;
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            figures.succeeded = number_before(rest, " succeeded").context("no succeeded")? as u64;
            let failed = number_before(rest, " failed").unwrap_or(0.0);
            let errored = number_before(rest, " errored").unwrap_or(0.0);
            let timeout = number_before(rest, " timeout").unwrap_or(0.0);
            figures.errors = (failed + errored + timeout) as u64;
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            two_xx = number_before(rest, " 2xx").context("no 2xx count")? as u64;
            other_status = ["3xx", "4xx", "5xx"]
                .iter()
                .filter_map(|w| number_before(rest, &format!(" {w}")))
                .sum::<f64>() as u64;
            seen.2 = true;
        }
    }
    if seen != (true, true, true) {
        bail!("missing summary lines");
    }
    // Anything not answered 2xx is an error, and only 2xx answers count as served.
    figures.errors += other_status;
    figures.succeeded = figures.succeeded.min(two_xx);
    Ok(figures)
}

/// h2load's log: one line per request, `start (µs since epoch) \t status \t duration (µs)`.
fn read_latencies(log: &Path) -> anyhow::Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut latencies: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let _start = fields.next()?;
            let status: u16 = fields.next()?.trim().parse().ok()?;
            let micros: f64 = fields.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(micros)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn report(args: &Args, runs: &[Run], h2load_version: &str) -> String {
    let pick = |server: &str, proto: Proto| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.server == server && r.proto == proto)
            .collect()
    };
    let med =
        |rs: &[&Run], f: fn(&Run) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for proto in [Proto::Http1, Proto::Http2] {
        let mut figures = Vec::new();
        for server in ["limit", "portico"] {
            let rs = pick(server, proto);
            let f = (
                med(&rs, |r| r.requests_per_second),
                med(&rs, |r| r.p50_ms),
                med(&rs, |r| r.p99_ms),
                rs.iter().map(|r| r.errors).sum::<u64>(),
                med(&rs, |r| r.cpu_us_per_request),
                rs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
            );
            rows.push(vec![
                proto.name().to_string(),
                server.to_string(),
                format!("{:.0}", f.0),
                format!("{:.2}", f.1),
                format!("{:.2}", f.2),
                f.3.to_string(),
                format!("{:.1}", f.4),
                mib(f.5),
            ]);
            figures.push(f);
        }
        let (l, p) = (figures[0], figures[1]);
        let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
        rows.push(vec![
            proto.name().to_string(),
            "portico ÷ limit".to_string(),
            ratio(p.0, l.0),
            ratio(p.1, l.1),
            ratio(p.2, l.2),
            "".to_string(),
            ratio(p.4, l.4),
            ratio(p.5 as f64, l.5 as f64),
        ]);
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        verdicts.push(format!(
            "{}: throughput {:.2}× limit (target ≥ 0.60: {}); p99 {:.2}× limit (target ≤ 1.50: {}); CPU {:.1} µs/review (target ≤ 30: {}); peak RSS {} MiB (target ≤ 32: {}); errors {}",
            proto.name(),
            p.0 / l.0,
            met(p.0 / l.0 >= 0.6),
            p.2 / l.2,
            met(p.2 / l.2 <= 1.5),
            p.4,
            met(p.4 <= 30.0),
            mib(p.5),
            met(p.5 <= 32 * 1024 * 1024),
            p.3
        ));
    }
    let mut out = format!(
        "\nWebhook load: {} B Pod CREATE review, {} in flight (HTTP/1.1: {} keep-alive connections; HTTP/2: {} connections), {} rounds of {} s per server and protocol, alternating portico/limit; {} on {} cores\n\n",
        POD_CREATE.len(),
        args.in_flight,
        args.in_flight,
        args.h2_connections.clamp(1, args.in_flight),
        args.rounds,
        args.seconds,
        h2load_version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    out.push_str(&table(
        &[
            "protocol",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU µs/req",
            "peak RSS MiB",
        ],
        &rows,
    ));
    out.push('\n');
    for v in verdicts {
        out.push_str(&v);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_summaries() {
        let out = "finished in 8.00s, 12345.67 req/s, 70.49MB/s\n\
            requests: 98765 total, 98765 started, 98765 done, 98760 succeeded, 5 failed, 0 errored, 0 timeout\n\
            status codes: 98760 2xx, 0 3xx, 5 4xx, 0 5xx\n";
        let f = parse_summary(out).unwrap();
        assert_eq!(f.requests_per_second, 12345.67);
        assert_eq!(f.succeeded, 98760);
        assert_eq!(f.errors, 10);
        assert!(parse_summary("nothing").is_err());
    }
}
