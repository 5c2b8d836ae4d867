//! The `portico` command tree (clap). Each subcommand is a thin shell over the core: it reads
//! files or flags, calls the same functions the server calls, and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod audit;
pub mod certs;
pub mod offline;
pub mod serve;

/// Portico: per-user routing labels for the pods of interactive jobs, and the Services that
/// reach them.
///
/// Every pod of a job that asks for an ipaddr tag (annotation `portico.dev/ipaddr: foobar`) is
/// labelled `jarvice-job-ipaddr: <user-prefix>-foobar`, where the user part comes from who made
/// the request and can never be chosen by the user.
#[derive(Parser, Debug)]
#[command(name = "portico", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Serve(serve::ServeArgs),
    /// Make a CA and a serving certificate for the webhook; print the base64 caBundle.
    Certs(certs::CertsArgs),
    /// Print the Exposure CustomResourceDefinition (YAML).
    Crd,
    /// Answer an AdmissionReview offline: a review (file or stdin) in, the server's reply out.
    ///
    /// Prints exactly the JSON the server would answer with HTTP 200. A body that is not a
    /// review at all (the server's HTTP 400) is an error with exit code 2.
    ///
    /// Some rules need to know the cluster: whose routed pods and Services a hand-written
    /// EndpointSlice or Endpoints object, an ExternalName Service or an Ingress points at. The
    /// server knows from its watches; here, give the Pods and Services with `--cluster`. Without
    /// it, the cluster is taken as known and empty — nothing routed — so a review is judged
    /// against the objects it holds only.
    Review(ReviewArgs),
    /// Show a manifest as it would be stored: multi-document YAML in, YAML out.
    ///
    /// Pods and workloads (Job, CronJob, StatefulSet, Deployment, ReplicaSet, DaemonSet) are
    /// stamped as if USER created them; Services and Exposures are checked. Warnings go to stderr.
    /// Exit code 1, with the denial messages on stderr, when any document would be refused.
    Mutate(MutateArgs),
    /// Check a configuration file and explain every bad value.
    #[command(subcommand)]
    Config(ConfigCommand),
    Audit(audit::AuditArgs),
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// Configuration file (YAML); the defaults when absent.
    #[arg(long, env = "PORTICO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The AdmissionReview JSON; `-` or absent reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Answer as `POST /validate` instead of `POST /mutate`.
    #[arg(long)]
    pub validate: bool,
    /// The cluster's routed Pods (owner label, `status.podIPs`) and Services (routing
    /// selectors), from manifests or `kubectl get pods,services -A -o yaml`: a file, or a folder
    /// of `.yaml`, `.yml` and `.json` files (multi-document, `List`s too). Repeatable. Without
    /// it: nothing is routed.
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub cluster: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MutateArgs {
    /// Configuration file (YAML); the defaults when absent.
    #[arg(long, env = "PORTICO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The user submitting the manifests, as the apiserver would authenticate them.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// The user's groups, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "GROUP,..")]
    pub groups: Vec<String>,
    /// Namespace for documents that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The manifests (multi-document YAML); `-` or absent reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parse and check FILE; exit code 1 with every problem explained when it is not usable.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the default configuration, every key with its default.
    Defaults,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portico: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            serve::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => {
            certs::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => {
            let (text, code) = audit::run(&args)?;
            print!("{text}");
            Ok(ExitCode::from(code))
        }
        Command::Crd => {
            print!("{}", crate::api::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Review(args) => {
            let out = offline::review(
                args.config.as_deref(),
                &args.cluster,
                args.file.as_deref(),
                args.validate,
            )?;
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Mutate(args) => {
            let actor = offline::Actor {
                user: &args.user,
                groups: &args.groups,
                namespace: &args.namespace,
            };
            let (out, warnings, denials) =
                offline::mutate(args.config.as_deref(), &actor, args.file.as_deref())?;
            for w in &warnings {
                eprintln!("Warning: {w}");
            }
            print!("{out}");
            if denials.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                for d in &denials {
                    eprintln!("Error: denied: {d}");
                }
                Ok(ExitCode::from(1))
            }
        }
        Command::Config(ConfigCommand::Check { file }) => match offline::config_check(&file) {
            Ok(summary) => {
                println!("{summary}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("portico: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", crate::config::Config::defaults_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
