//! `portico serve` and `portico certs` as commands: flags, environment fallbacks, help text, and
//! what `certs` writes. One test per concern; only `environment_fallbacks` touches the
//! environment, and nothing else in this binary reads `PORTICO_*` variables.

use clap::{Args as _, Command, Parser};
use portico::cli::certs::CertsArgs;
use portico::cli::serve::{LogFormat, ServeArgs};

#[derive(Parser, Debug)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Parser, Debug)]
struct Certs {
    #[command(flatten)]
    args: CertsArgs,
}

#[test]
fn help_reads_like_documentation() {
    for (name, mut command) in [
        ("serve", ServeArgs::augment_args(Command::new("serve"))),
        ("certs", CertsArgs::augment_args(Command::new("certs"))),
    ] {
        command.build();
        // clap's own consistency checks (duplicate flags, bad defaults) run in debug builds.
        command.clone().debug_assert();
        let help = command.render_long_help().to_string();
        assert!(help.len() > 500, "{name}: {help}");
        println!("{help}");
    }
    let help = ServeArgs::augment_args(Command::new("serve"))
        .render_long_help()
        .to_string();
    for flag in [
        "--tls-cert",
        "--tls-key",
        "--listen",
        "--ops-listen",
        "--config",
        "--no-controller",
        "--log-format",
        "--log-level",
        "PORTICO_TLS_CERT",
        "PORTICO_OPS_LISTEN",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
}

#[test]
fn environment_fallbacks() {
    // Only this test in this binary sets or reads these variables.
    std::env::set_var("PORTICO_LISTEN", "127.0.0.1:18443");
    std::env::set_var("PORTICO_NO_CONTROLLER", "1");
    std::env::set_var("PORTICO_LOG_FORMAT", "json");
    std::env::set_var("PORTICO_TLS_KEY", "/secret/tls.key");
    let serve = Serve::try_parse_from(["serve"]).unwrap().args;
    assert_eq!(serve.listen.to_string(), "127.0.0.1:18443");
    assert!(serve.no_controller);
    assert_eq!(serve.log_format, LogFormat::Json);
    assert_eq!(serve.tls_key.to_str(), Some("/secret/tls.key"));
    // The flag wins over the environment.
    let serve = Serve::try_parse_from(["serve", "--listen", "127.0.0.1:1"])
        .unwrap()
        .args;
    assert_eq!(serve.listen.to_string(), "127.0.0.1:1");
    std::env::set_var("PORTICO_NO_CONTROLLER", "false");
    assert!(!Serve::try_parse_from(["serve"]).unwrap().args.no_controller);
    for name in [
        "PORTICO_LISTEN",
        "PORTICO_NO_CONTROLLER",
        "PORTICO_LOG_FORMAT",
        "PORTICO_TLS_KEY",
    ] {
        std::env::remove_var(name);
    }
}

#[test]
fn certs_writes_the_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = Certs::try_parse_from([
        "certs",
        "--service",
        "hook",
        "--namespace",
        "tools",
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
        "--days",
        "3",
    ])
    .unwrap()
    .args;
    portico::cli::certs::run(args).unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // What was written is a pair the server accepts, valid for the requested days.
    let loaded = portico::server::tls::load_pair(
        &out.join("tls.crt"),
        &out.join("tls.key"),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let left = loaded.seconds_left(std::time::SystemTime::now());
    assert!(left > 2 * 86_400 && left <= 3 * 86_400, "{left}");

    let bad = Certs::try_parse_from(["certs", "--service", "Bad_Name", "--out", "x"])
        .unwrap()
        .args;
    let err = portico::cli::certs::run(bad).unwrap_err();
    assert!(err.to_string().contains("--service"), "{err}");
}

#[tokio::test]
async fn serve_reports_a_missing_certificate_by_name() {
    let args = Serve::try_parse_from([
        "serve",
        "--no-controller",
        "--tls-cert",
        "/nonexistent/portico/tls.crt",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ])
    .unwrap()
    .args;
    let err = portico::cli::serve::serve(args).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent/portico/tls.crt"),
        "{err:#}"
    );
    assert!(Serve::try_parse_from(["serve", "--no-webhook", "--no-controller"]).is_err());
}
