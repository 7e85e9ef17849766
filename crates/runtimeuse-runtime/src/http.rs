//! Downloads before a request (with `.zip` extraction) and artifact uploads (HTTP PUT), on
//! reqwest (the HTTP client the agents use too), with bodies streamed to and from disk.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use runtimeuse_proto::runtime::Redactor;
use runtimeuse_proto::{ArtifactUpload, Downloadable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest download accepted.
const MAX_DOWNLOAD: u64 = 4 << 30;

/// Bytes read from a file at once for an upload's body.
const UPLOAD_CHUNK: usize = 64 << 10;

/// The client of downloads and uploads, made once: connections are reused. An error when no
/// client can be made (a TLS backend that cannot start).
pub(crate) fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(600))
                .build()
                .map_err(|e| reqwest_message(&e))
        })
        .as_ref()
        .map_err(|e| format!("no HTTP client: {e}"))
}

/// Downloads a file into its working directory (created when missing); a `.zip` is extracted
/// there and removed. Returns the error text the request fails with.
pub(crate) async fn download(d: &Downloadable) -> Result<(), String> {
    let dir = PathBuf::from(&d.working_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("Download failed: {}: {e}", dir.display()))?;
    let response = client()
        .map_err(|e| format!("Download failed: {e}"))?
        .get(&d.download_url)
        .send()
        .await
        .map_err(|e| format!("Download failed: {}", reqwest_message(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "Download failed: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    let target = dir.join(file_name(&d.download_url));
    let mut file = tokio::fs::File::create(&target)
        .await
        .map_err(|e| format!("Download failed: {}: {e}", target.display()))?;
    let mut body = response.bytes_stream();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("Download failed: {}", reqwest_message(&e)))?;
        size += chunk.len() as u64;
        if size > MAX_DOWNLOAD {
            drop(file);
            let _ = tokio::fs::remove_file(&target).await;
            return Err(format!("Download failed: larger than {MAX_DOWNLOAD} bytes"));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("Download failed: {e}"))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("Download failed: {e}"))?;
    drop(file);
    if target
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        let (archive, into) = (target.clone(), dir.clone());
        let extracted = tokio::task::spawn_blocking(move || extract(&archive, &into))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        // The archive goes whether or not it could be extracted.
        let removed = tokio::fs::remove_file(&target).await;
        extracted.map_err(|e| format!("Download failed: extracting: {e}"))?;
        removed.map_err(|e| format!("Download failed: {e}"))?;
    }
    Ok(())
}

/// An error of reqwest with its causes (the top one alone says little: "error sending
/// request").
fn reqwest_message(e: &reqwest::Error) -> String {
    crate::with_causes(e.to_string(), e)
}

fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == ".." || name == "." {
        "download".to_owned()
    } else {
        name.to_owned()
    }
}

/// Extracts a zip archive into `dir`, all or nothing.
///
/// Every entry is checked before anything is written: an entry that would land outside `dir`,
/// a symbolic link (it could point anywhere, and whatever later follows it, a command or the
/// artifact upload, would leave `dir`), a name given twice, or a file where the archive or
/// `dir` has a directory (or the reverse) refuses the whole archive. Files are then written
/// beside their places under temporary names and renamed into place only once all of them
/// were written; when writing fails, what this extraction made is removed again.
pub(crate) fn extract(archive: &Path, dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    let plan = plan(&mut zip, dir)?;
    let mut made = Made::default();
    let written = plan
        .iter()
        .enumerate()
        .try_for_each(|(i, entry)| write_entry(&mut zip, i, entry, &mut made));
    if let Err(e) = written {
        made.undo();
        return Err(e);
    }
    for (partial, out) in std::mem::take(&mut made.partial) {
        std::fs::rename(&partial, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

/// Where an entry goes, and what it is.
struct Entry {
    out: PathBuf,
    dir: bool,
    mode: Option<u32>,
}

/// Checks every entry of the archive; where each goes.
fn plan(zip: &mut zip::ZipArchive<std::fs::File>, dir: &Path) -> Result<Vec<Entry>, String> {
    let mut plan = Vec::with_capacity(zip.len());
    let mut names = std::collections::HashMap::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| e.to_string())?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!("unsafe path in archive: {:?}", entry.name()));
        };
        if entry.is_symlink() {
            return Err(format!("symbolic link in archive: {:?}", entry.name()));
        }
        let is_dir = entry.is_dir();
        // Each ancestor of an entry is a directory; the entry itself what it says.
        for ancestor in relative.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            if names.insert(ancestor.to_path_buf(), true) == Some(false) {
                return Err(format!("{:?} is both a file and a directory", ancestor));
            }
        }
        match names.insert(relative.clone(), is_dir) {
            Some(before) if before != is_dir => {
                return Err(format!("{relative:?} is both a file and a directory"));
            }
            Some(false) => return Err(format!("{:?} appears twice in the archive", entry.name())),
            Some(true) | None => {}
        }
        plan.push(Entry {
            out: dir.join(&relative),
            dir: is_dir,
            mode: entry.unix_mode(),
        });
    }
    for (relative, is_dir) in &names {
        let out = dir.join(relative);
        match std::fs::symlink_metadata(&out) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{} is a symbolic link", out.display()));
            }
            Ok(meta) if meta.is_dir() != *is_dir => {
                return Err(format!(
                    "{} exists and is not a {}",
                    out.display(),
                    if *is_dir { "directory" } else { "file" }
                ));
            }
            _ => {}
        }
    }
    Ok(plan)
}

/// What an extraction made so far, to undo it if it cannot finish.
#[derive(Default)]
struct Made {
    dirs: Vec<PathBuf>,
    partial: Vec<(PathBuf, PathBuf)>,
}

impl Made {
    fn create_dirs(&mut self, dir: &Path) -> Result<(), String> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            self.dirs.push(d);
        }
        Ok(())
    }

    fn undo(self) {
        for (partial, _) in &self.partial {
            let _ = std::fs::remove_file(partial);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn write_entry(
    zip: &mut zip::ZipArchive<std::fs::File>,
    index: usize,
    entry: &Entry,
    made: &mut Made,
) -> Result<(), String> {
    if entry.dir {
        return made.create_dirs(&entry.out);
    }
    if let Some(parent) = entry.out.parent() {
        made.create_dirs(parent)?;
    }
    let mut partial = entry.out.clone().into_os_string();
    partial.push(format!(".runtimeuse-partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let mut f =
        std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    made.partial.push((partial.clone(), entry.out.clone()));
    let mut data = zip.by_index(index).map_err(|e| e.to_string())?;
    std::io::copy(&mut data, &mut f).map_err(|e| format!("{}: {e}", entry.out.display()))?;
    #[cfg(unix)]
    if let Some(mode) = entry.mode {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777));
    }
    Ok(())
}

/// PUTs an artifact to its presigned URL with the given content type and its length, the
/// body streamed from the file. Returns the error text when it fails; the URL and the path
/// came from the client, so the text goes through `redactor`.
pub(crate) async fn upload(
    filepath: &str,
    upload: &ArtifactUpload,
    redactor: &Redactor,
) -> Result<(), String> {
    let failed = |e: String| redactor.redact(&format!("{filepath}: {e}")).into_owned();
    let file = tokio::fs::File::open(filepath)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| failed(e.to_string()))?
        .len();
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; UPLOAD_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let response = client()
        .map_err(&failed)?
        .put(&upload.presigned_url)
        .header(reqwest::header::CONTENT_TYPE, &upload.content_type)
        // Presigned PUTs (S3 and the like) want the length, not a chunked body.
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .map_err(|e| failed(reqwest_message(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("refused with HTTP {}", status.as_u16())));
    }
    tracing::debug!(status = status.as_u16(), "artifact uploaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::extract;

    #[test]
    fn an_archive_with_an_escaping_entry_is_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("runtimeuse-zip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("good.txt", options).unwrap();
        zip.write_all(b"good").unwrap();
        zip.start_file("../evil.txt", options).unwrap();
        zip.write_all(b"evil").unwrap();
        zip.finish().unwrap();
        let err = extract(&archive, &dir).unwrap_err();
        assert!(err.contains("unsafe path"), "{err}");
        assert!(!dir.join("good.txt").exists());
        assert!(!dir.parent().unwrap().join("evil.txt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("runtimeuse-zip-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Everything under `dir`, as sorted relative paths.
    fn listing(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn an_archive_with_a_symlink_is_refused_before_anything_is_written() {
        let dir = scratch("symlink");
        let archive = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("sub/first.txt", options).unwrap();
        zip.write_all(b"first").unwrap();
        zip.add_symlink("sub/link", "/etc/passwd", options).unwrap();
        zip.start_file("sub/link/after.txt", options).unwrap();
        zip.write_all(b"after").unwrap();
        zip.finish().unwrap();
        let err = extract(&archive, &dir).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(listing(&dir), ["a.zip"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflicting_entries_are_refused_before_anything_is_written() {
        let dir = scratch("conflict");
        let archive = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("x/one.txt", options).unwrap();
        zip.write_all(b"1").unwrap();
        zip.start_file("x", options).unwrap();
        zip.write_all(b"a file where a directory is").unwrap();
        zip.finish().unwrap();
        let err = extract(&archive, &dir).unwrap_err();
        assert!(err.contains("both a file and a directory"), "{err}");
        assert_eq!(listing(&dir), ["a.zip"]);
        // A file in the way on disk is refused the same way.
        let archive = dir.join("b.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        zip.start_file("d/inner.txt", options).unwrap();
        zip.write_all(b"1").unwrap();
        zip.finish().unwrap();
        std::fs::write(dir.join("d"), b"in the way").unwrap();
        let err = extract(&archive, &dir).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_good_archive_lands_whole() {
        let dir = scratch("good");
        let archive = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.add_directory("empty/", options).unwrap();
        zip.start_file("a/b/c.txt", options).unwrap();
        zip.write_all(b"c").unwrap();
        zip.start_file("top.txt", options).unwrap();
        zip.write_all(b"top").unwrap();
        zip.finish().unwrap();
        std::fs::write(dir.join("top.txt"), b"old").unwrap();
        extract(&archive, &dir).unwrap();
        assert_eq!(
            listing(&dir),
            ["a", "a.zip", "a/b", "a/b/c.txt", "empty", "top.txt"]
        );
        assert_eq!(std::fs::read(dir.join("top.txt")).unwrap(), b"top");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
