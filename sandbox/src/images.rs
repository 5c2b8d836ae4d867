//! Which images the kubelet stand-in pretends to run. Nothing runs in the sandbox: a pod of an
//! image on the list is marked Running and Ready, and any other stays Pending with
//! `ErrImagePull`, as a cluster that cannot pull the image shows it, so that an install checked
//! against the sandbox is not mistaken for one that works.

/// The list `portico-sandbox` starts with (`--image` replaces it): the images Portico's own
/// examples and scene use. The library's [`crate::SandboxOptions`] defaults to every image (`*`):
/// its tests are about Portico, not images.
pub const CLI_DEFAULT: &[&str] = &["busybox", "nginx", "python", "alpine", "quay.io/jupyter/*"];

/// Whether `image` is on the list. An entry is a repository (`busybox`, which also matches
/// `docker.io/library/busybox:1.36`), a repository with a tag (`busybox:1.36`), or ends in `*`
/// (a prefix of the full reference; `*` alone is every image).
pub fn pretends_to_run(list: &[String], image: &str) -> bool {
    let repository = repository_of(image);
    list.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix) || repository.starts_with(prefix),
        None if entry.contains(':') || entry.contains('@') => {
            image == entry || format!("docker.io/library/{entry}") == image
        }
        None => repository == entry.as_str(),
    })
}

/// The repository of an image reference: no tag or digest, no `docker.io/library/`.
fn repository_of(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' is a tag; before it, a registry's port.
    let without_tag = match without_digest.rsplit_once(':') {
        Some((head, tag)) if !tag.contains('/') => head,
        _ => without_digest,
    };
    without_tag
        .strip_prefix("docker.io/library/")
        .or_else(|| without_tag.strip_prefix("docker.io/"))
        .unwrap_or(without_tag)
        .to_string()
}

/// What the pod's status says of an image the sandbox does not pretend to run.
pub fn refusal(image: &str) -> String {
    format!(
        "portico-sandbox runs no images and pretends to run only those on its list (--image); \
         {image:?} is not on it, so this pod stays Pending, as where an image cannot be pulled. \
         Start the sandbox with --image {image} to pretend anyway"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn listed_images_run_and_others_do_not() {
        let l = list(CLI_DEFAULT);
        for yes in [
            "busybox",
            "busybox:1.36",
            "docker.io/library/busybox:latest",
            "nginx@sha256:abc",
            "quay.io/jupyter/base-notebook:2025-01-06",
        ] {
            assert!(pretends_to_run(&l, yes), "{yes}");
        }
        for no in [
            "portico:0.1.0",
            "registry.example.org/portico:0.1.0",
            "busyboxx",
            "evil/busybox",
            "localhost:5000/busybox",
        ] {
            assert!(!pretends_to_run(&l, no), "{no}");
        }
        assert!(pretends_to_run(&list(&["*"]), "portico:0.1.0"));
        assert!(pretends_to_run(&list(&["portico:0.1.0"]), "portico:0.1.0"));
        assert!(!pretends_to_run(&list(&["portico:0.1.0"]), "portico:0.2.0"));
        assert!(pretends_to_run(
            &list(&["registry.example.org/*"]),
            "registry.example.org/hpc/x:1"
        ));
    }
}
