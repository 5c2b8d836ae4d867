//! The webhook's reserve of file descriptors, which nothing on the API port can take.
//!
//! Each listener caps its own connections, but file descriptors are the process's: if the
//! open-file limit cannot hold the API's cap on top of what the webhook needs, a flood of the
//! API port would still leave the webhook unable to accept the apiserver's connections. So the
//! API's cap is fitted under the limit at start: when the limit is too low, the API's cap is
//! lowered, loudly — never the webhook's reserve. [`plan`] decides from plain numbers; [`apply`]
//! reads the limit (Linux: `/proc/self/limits`) and the descriptors in use.

/// The API's connection cap that leaves `reserve` descriptors (the webhook, the ops port, the
/// process) under `limit`, with `open` in use already; at least 1, at most `wanted`.
pub fn plan(wanted: usize, open: usize, reserve: usize, limit: u64) -> usize {
    let room = limit.saturating_sub((open + reserve) as u64);
    // At least one connection (the only descriptor it may take from the reserve): an API that
    // can serve nobody helps nobody either.
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(1, wanted.max(1))
}

/// The soft "Max open files" of `/proc/self/limits` text; `None` when unlimited or absent.
pub fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Applies [`plan`] to this process and returns the cap the API's listener gets. Where the
/// limit cannot be read, the cap is kept as configured.
pub fn apply(wanted: usize, reserve: usize) -> usize {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(soft_open_files)
    else {
        return wanted;
    };
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let cap = plan(wanted, open, reserve, limit);
    if cap < wanted {
        tracing::error!(
            wanted,
            cap,
            limit,
            reserve,
            open,
            "service API: the open-file limit cannot hold --api-max-connections beside the webhook's reserve; the API's cap is lowered (raise the limit, e.g. the container's nofile, or lower --api-max-connections)"
        );
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_with_room_leaves_the_cap_alone() {
        assert_eq!(plan(256, 20, 1344, 20_000), 256);
        assert_eq!(plan(256, 20, 1344, 1620), 256);
    }

    #[test]
    fn the_api_gives_way_to_the_reserve() {
        // 1,024 descriptors, 1,000 reserved, 4 open: 20 left for the API.
        assert_eq!(plan(256, 4, 1000, 1024), 20);
        // No room at all: one connection, so the API still answers someone.
        assert_eq!(plan(256, 50, 2000, 1024), 1);
        assert_eq!(plan(0, 0, 0, 1024), 1);
    }

    #[test]
    fn the_soft_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax processes             unlimited            unlimited            processes \nMax open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(soft_open_files(unlimited), None);
        assert_eq!(soft_open_files(""), None);
    }
}
