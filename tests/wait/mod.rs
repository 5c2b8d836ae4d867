//! Waiting for the cluster (sandbox or real) to get somewhere, shared by the sandbox harness and
//! the provisioner scenarios.

use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some`, or panics after `secs` seconds naming
/// `what` (a bound on a hang, not a figure).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
