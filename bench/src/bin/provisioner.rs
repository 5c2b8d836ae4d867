//! `portico-bench-provisioner`: the provisioner at scale against the sandbox (in progress).

fn main() {}
