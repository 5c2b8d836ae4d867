//! A real `kubectl` session against the sandbox, as a user lives it: the warnings Portico prints
//! when it stamps, the denials (and what they say) when a request would reach another user's
//! pods, an Exposure, and warn mode. Every line a user sees is asserted; with
//! `PORTICO_WRITE_SESSION=1` the transcript is also written to docs/kubectl-session.md, so the
//! document is reproduced by this test rather than written by hand.

mod harness;
mod kubectl_bin;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use harness::{eventually, test_config, Loop};
use kubectl_bin::kubectl;
use portico::config::AuditMode;

/// One kubectl run as it appears in the transcript.
struct Step {
    ok: bool,
    out: String,
    err: String,
}

struct Session {
    bin: PathBuf,
    kubeconfig: PathBuf,
    transcript: String,
}

impl Session {
    /// Runs `kubectl --context <as> -n team ARGS` (stdin optional) and records it.
    fn run(&mut self, who: &str, args: &[&str], stdin: Option<&str>) -> Step {
        let ran = kubectl_bin::run(&self.bin, &self.kubeconfig, who, args, stdin);
        let step = Step {
            ok: ran.ok,
            out: ran.out,
            err: ran.err,
        };
        let shown = args.join(" ");
        let _ = writeln!(self.transcript, "```console");
        match stdin {
            Some(doc) => {
                let _ = writeln!(
                    self.transcript,
                    "$ kubectl --context {who} -n team {shown} <<EOF"
                );
                let _ = write!(self.transcript, "{}", doc.trim_start());
                let _ = writeln!(self.transcript, "EOF");
            }
            None => {
                let _ = writeln!(self.transcript, "$ kubectl --context {who} -n team {shown}");
            }
        }
        let _ = write!(self.transcript, "{}{}", step.err, step.out);
        let _ = writeln!(self.transcript, "```\n");
        step
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.transcript, "{text}\n");
    }
}

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: lab
  annotations:
    portico.dev/ipaddr: foobar
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
"#;

const LONG_TAG_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: long
  annotations:
    portico.dev/ipaddr: a-tag-that-is-far-too-long-for-the-sixty-three-characters-budget
spec:
  containers: [{name: main, image: busybox}]
"#;

const STEAL: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: peek
spec:
  selector:
    jarvice-pod0-job-ipaddr: user1-foobar
  ports: [{port: 80}]
"#;

const EXPOSURE: &str = r#"
apiVersion: portico.dev/v1alpha1
kind: Exposure
metadata:
  name: foobar
spec:
  tag: foobar
  target: pod0
  service:
    type: NodePort
    ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
"#;

const EXPOSURE_OF_USER1: &str = r#"
apiVersion: portico.dev/v1alpha1
kind: Exposure
metadata:
  name: borrowed
spec:
  tag: foobar
  user: user1
  service:
    type: NodePort
    ports: [{name: http, port: 80}]
"#;

async fn session(loop_: &Loop, bin: PathBuf) -> (Session, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    loop_
        .sandbox
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    (
        Session {
            bin,
            kubeconfig,
            transcript: String::new(),
        },
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_kubectl_session() {
    let bin = kubectl();
    let mut doc = String::from(
        "# A kubectl session with Portico\n\n\
         Recorded by `tests/kubectl_session.rs` against the sandbox API server with Portico's webhook \
         and provisioner (`PORTICO_WRITE_SESSION=1 cargo test --test kubectl_session` rewrites this \
         file). Contexts `user1` and `user2` are two ordinary users of the namespace `team`; \
         `admin` is a cluster administrator. Pod names carry random suffixes and are shown as \
         the sandbox made them.\n\n",
    );

    // --- Enforce mode ---------------------------------------------------------------------
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let (mut s, _dir) = session(&l, bin.clone()).await;
    s.say("## Asking for a tag\n\nA Job asks for the tag `foobar` with one annotation; Portico stamps its pods and says so:");
    let step = tokio::task::block_in_place(|| s.run("user1", &["create", "-f", "-"], Some(JOB)));
    assert!(step.ok, "{}", step.err);
    assert!(
        step.err.contains(
            "Warning: portico: pods of this workload labelled jarvice-job-ipaddr=user1-foobar"
        ),
        "{}",
        step.err
    );
    let pods = eventually(20, "two labelled pods", || async {
        let (_, out) = tokio::task::block_in_place(|| {
            let o = Command::new(&s.bin)
                .arg("--kubeconfig")
                .arg(&s.kubeconfig)
                .args([
                    "--context",
                    "user1",
                    "-n",
                    "team",
                    "get",
                    "pods",
                    "-l",
                    "jarvice-job-ipaddr=user1-foobar",
                    "-o",
                    "name",
                ])
                .output()
                .expect("kubectl");
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        });
        (out.lines().count() == 2).then_some(out)
    })
    .await;
    let step = tokio::task::block_in_place(|| {
        s.run(
            "user1",
            &[
                "get",
                "pods",
                "-L",
                "jarvice-job-ipaddr,jarvice-pod0-job-ipaddr",
            ],
            None,
        )
    });
    assert!(step.out.contains("user1-foobar"), "{}", step.out);
    let first = pods
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pod/"))
        .expect("a pod")
        .to_string();

    s.say("## The character budget\n\nA route value is at most 63 characters: `user1-` leaves 57 for the tag.");
    let step =
        tokio::task::block_in_place(|| s.run("user1", &["create", "-f", "-"], Some(LONG_TAG_POD)));
    assert!(!step.ok);
    assert!(
        step.err.contains("denied the request") && step.err.contains("has room for at most 57"),
        "{}",
        step.err
    );

    s.say("## Reaching another user's pods is refused\n\nRelabelling user1's pod as user2:");
    let label = "jarvice-job-ipaddr=user2-x";
    let step = tokio::task::block_in_place(|| {
        s.run(
            "user2",
            &["label", "pod", &first, label, "--overwrite"],
            None,
        )
    });
    assert!(!step.ok);
    assert!(
        step.err.contains("cannot be changed afterwards"),
        "{}",
        step.err
    );
    s.say("A Service of user2's selecting user1's route value:");
    let step = tokio::task::block_in_place(|| s.run("user2", &["create", "-f", "-"], Some(STEAL)));
    assert!(!step.ok);
    assert!(
        step.err.contains("denied the request") && step.err.contains("user1-foobar"),
        "{}",
        step.err
    );
    s.say("An Exposure naming user1 as its user, created by user2:");
    let step = tokio::task::block_in_place(|| {
        s.run("user2", &["create", "-f", "-"], Some(EXPOSURE_OF_USER1))
    });
    assert!(!step.ok);
    assert!(step.err.contains("denied the request"), "{}", step.err);

    s.say("## An Exposure\n\nA fixed node port for the first pod of every job tagged `foobar`:");
    let step =
        tokio::task::block_in_place(|| s.run("user1", &["create", "-f", "-"], Some(EXPOSURE)));
    assert!(step.ok, "{}", step.err);
    eventually(20, "the Exposure ready", || async {
        let o = tokio::task::block_in_place(|| {
            Command::new(&s.bin)
                .arg("--kubeconfig")
                .arg(&s.kubeconfig)
                .args([
                    "--context",
                    "user1",
                    "-n",
                    "team",
                    "get",
                    "exposure",
                    "foobar",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()
                .expect("kubectl")
        });
        (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
    })
    .await;
    let step = tokio::task::block_in_place(|| s.run("user1", &["get", "exposures"], None));
    assert!(
        step.out.contains("foobar") && step.out.contains("80:30080") && step.out.contains("True"),
        "{}",
        step.out
    );
    doc.push_str("## Enforce mode (the default)\n\n");
    doc.push_str(&s.transcript.replace("## ", "### "));
    p.stop().await;
    drop(l);

    // --- Warn mode ------------------------------------------------------------------------
    let mut config = test_config();
    config.audit.mode = AuditMode::Warn;
    let l = Loop::start_with(config).await;
    let (mut s, _dir2) = session(&l, bin).await;
    s.say("With `audit.mode: warn`, the same refusals are answered as allowed, with a warning saying what enforce mode would do:");
    let step = tokio::task::block_in_place(|| s.run("user2", &["create", "-f", "-"], Some(STEAL)));
    assert!(step.ok, "{}", step.err);
    assert!(
        step.err
            .contains("Warning: portico (warn mode): would deny: ")
            && step.err.contains("user1-foobar"),
        "{}",
        step.err
    );
    doc.push_str("## Warn mode (for rollout)\n\n");
    doc.push_str(&s.transcript);

    if std::env::var_os("PORTICO_WRITE_SESSION").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/kubectl-session.md");
        std::fs::write(&path, doc.trim_end().to_string() + "\n").expect("write the session");
    }
}

/// `kubectl explain` reads the Exposure's schema from the sandbox (its OpenAPI v3 document carries
/// the CRD's schema) and prints the descriptions written for humans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_describes_the_exposure() {
    let bin = kubectl();
    let l = Loop::start().await;
    let (mut s, _dir) = session(&l, bin).await;
    let spec = tokio::task::block_in_place(|| s.run("user1", &["explain", "exposure.spec"], None));
    assert!(spec.ok, "{}", spec.err);
    for needle in [
        "KIND:       Exposure",
        "What to expose and how",
        "tag\t<string> -required-",
        "The ipaddr tag whose pods this exposes",
        "enum: pod0, all",
    ] {
        assert!(
            spec.out.contains(needle),
            "{needle:?} missing:\n{}",
            spec.out
        );
    }
    let kind = tokio::task::block_in_place(|| s.run("user1", &["explain", "exposures"], None));
    assert!(kind.ok, "{}", kind.err);
    assert!(kind.out.contains("DNS-1035 label"), "{}", kind.out);
    assert!(!kind.out.contains("Auto-generated"), "{}", kind.out);
}
