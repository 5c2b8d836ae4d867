//! A template's `input/` folder packed as base64 tar.gz, for the `<input>` keyword.
//!
//! The archive is reproducible: entries sorted by path, owner 0, modification time 0, mode 0644
//! for files and 0755 for folders (0755 for files the owner may execute). Symbolic links and
//! other special files are refused, so a template cannot pull in files from outside its folder.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Packed archives larger than this are refused: they end up in an object, and the apiserver
/// refuses objects over about 1.5 MiB.
pub const MAX_PACKED_BYTES: usize = 512 * 1024;

/// Why `input/` cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: only regular files and folders may be packed")]
    Special { path: String },
    #[error("{path}: packed input is {size} bytes; at most {MAX_PACKED_BYTES} fit in an object")]
    TooLarge { path: String, size: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |error| InputError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// The folder as base64 tar.gz; `None` when there is no such folder.
pub fn pack(dir: &Path) -> Result<Option<String>, InputError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(dir)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(InputError::Special {
                path: dir.display().to_string(),
            })
        }
        Ok(_) => {}
    }
    let mut entries = Vec::new();
    collect(dir, PathBuf::new(), &mut entries)?;
    entries.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    for rel in entries {
        let full = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&full).map_err(io(&full))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &rel, std::io::empty())
                .map_err(io(&full))?;
        } else {
            #[cfg(unix)]
            let exec = {
                use std::os::unix::fs::PermissionsExt as _;
                meta.permissions().mode() & 0o100 != 0
            };
            #[cfg(not(unix))]
            let exec = false;
            let data = std::fs::read(&full).map_err(io(&full))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, &rel, data.as_slice())
                .map_err(io(&full))?;
        }
    }
    let gz = tar.into_inner().map_err(io(dir))?;
    let mut gz = gz;
    gz.flush().map_err(io(dir))?;
    let bytes = gz.finish().map_err(io(dir))?;
    let packed = base64::engine::general_purpose::STANDARD.encode(bytes);
    if packed.len() > MAX_PACKED_BYTES {
        return Err(InputError::TooLarge {
            path: dir.display().to_string(),
            size: packed.len(),
        });
    }
    Ok(Some(packed))
}

fn collect(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let here = root.join(&rel);
    for entry in std::fs::read_dir(&here).map_err(io(&here))? {
        let entry = entry.map_err(io(&here))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        let child = rel.join(entry.file_name());
        if kind.is_dir() {
            out.push(child.clone());
            collect(root, child, out)?;
        } else if kind.is_file() {
            out.push(child);
        } else {
            return Err(InputError::Special {
                path: path.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn packs_reproducibly_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pack(&dir.path().join("input")).unwrap(), None);
        let input = dir.path().join("input");
        std::fs::create_dir_all(input.join("sub")).unwrap();
        std::fs::write(input.join("b.txt"), "bee").unwrap();
        std::fs::write(input.join("sub/a.py"), "print(1)").unwrap();
        let first = pack(&input).unwrap().unwrap();
        assert_eq!(
            pack(&input).unwrap().unwrap(),
            first,
            "same bytes each time"
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&first)
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            seen.push((path, text));
        }
        assert_eq!(
            seen,
            [
                ("b.txt".to_string(), "bee".to_string()),
                ("sub".to_string(), String::new()),
                ("sub/a.py".to_string(), "print(1)".to_string()),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        std::fs::create_dir_all(&input).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", input.join("link")).unwrap();
        let err = pack(&input).unwrap_err().to_string();
        assert!(err.contains("only regular files"), "{err}");
    }
}
