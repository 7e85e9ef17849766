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
                .map_err(reqwest_message)
        })
        .as_ref()
        .map_err(|e| format!("no HTTP client: {e}"))
}

/// Most bytes one archive may expand to, all its entries together.
const MAX_EXPANDED: u64 = 4 << 30;

/// Most entries of one archive.
const MAX_ENTRIES: usize = 65_536;

/// Downloads a file into its working directory (created when missing); a `.zip` is extracted
/// there and removed. Returns the error text the request fails with: the upstream's
/// (`Download failed: 404 Not Found`), then the URL it came from without its query (a
/// presigned URL's signature is a credential) and the file or directory that failed.
///
/// The body goes to a temporary name beside the target and is renamed into place only once
/// whole: a body cut half way, a cancel or a failure leave no partial file, and a good file
/// already there stays as it was.
pub(crate) async fn download(d: &Downloadable) -> Result<(), String> {
    fetch(d)
        .await
        .map_err(|e| format!("Download failed: {e} (GET {})", shown_url(&d.download_url)))
}

async fn fetch(d: &Downloadable) -> Result<(), String> {
    let dir = PathBuf::from(&d.working_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let response = client()?
        .get(&d.download_url)
        .send()
        .await
        .map_err(reqwest_message)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    if let Some(length) = response.content_length() {
        room_for(&dir, length)?;
    }
    let target = dir.join(file_name(&d.download_url));
    let part = Part::new(&target);
    let mut file = tokio::fs::File::create(&part.path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", part.path.display()))?;
    let mut body = response.bytes_stream();
    let mut size = 0u64;
    let written = |e: std::io::Error| format!("writing {}: {e}", target.display());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(reqwest_message)?;
        size += chunk.len() as u64;
        if size > MAX_DOWNLOAD {
            return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
        }
        file.write_all(&chunk).await.map_err(written)?;
    }
    file.flush().await.map_err(written)?;
    drop(file);
    if target
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        let (archive, into) = (part.path.clone(), dir.clone());
        let extracted = tokio::task::spawn_blocking(move || extract(&archive, &into))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        // The archive goes whether or not it could be extracted (with `part`).
        return extracted.map_err(|e| format!("extracting {}: {e}", target.display()));
    }
    part.keep().await
}

/// A download's temporary file: removed when dropped, unless [`Part::keep`] renamed it into
/// place.
struct Part {
    path: PathBuf,
    target: PathBuf,
}

impl Part {
    fn new(target: &Path) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(target.file_name().unwrap_or_default());
        name.push(format!(".runtimeuse-part-{}-{n}", std::process::id()));
        Self {
            path: target.with_file_name(name),
            target: target.to_path_buf(),
        }
    }

    /// Renames the whole file into place.
    async fn keep(self) -> Result<(), String> {
        tokio::fs::rename(&self.path, &self.target)
            .await
            .map_err(|e| format!("cannot write {}: {e}", self.target.display()))
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        // Gone already once renamed.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Refuses a body of `length` bytes up front when it is over the limit or the free space of
/// `dir`'s filesystem.
fn room_for(dir: &Path, length: u64) -> Result<(), String> {
    if length > MAX_DOWNLOAD {
        return Err(format!(
            "{length} bytes announced, more than the limit of {MAX_DOWNLOAD} bytes"
        ));
    }
    if let Ok(fs) = nix::sys::statvfs::statvfs(dir) {
        // `fsblkcnt_t` is u32 on some targets.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
        if length > free {
            return Err(format!(
                "{length} bytes announced, more than the {free} bytes free in {}",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// A URL as errors and logs show it: without its query, fragment and credentials.
pub(crate) fn shown_url(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or(url);
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => base.to_owned(),
    }
}

/// An error of reqwest with its causes (the top one alone says little: "error sending
/// request").
fn reqwest_message(e: reqwest::Error) -> String {
    // Without the URL: the caller names it, without its query.
    let e = e.without_url();
    crate::with_causes(e.to_string(), &e)
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
    extract_within(archive, dir, ZipLimits::default())
}

/// Bounds of an archive's extraction.
#[derive(Clone, Copy, Debug)]
struct ZipLimits {
    /// Most bytes all entries together expand to (checked against the declared sizes first,
    /// then while writing).
    expanded: u64,
    /// Most entries.
    entries: usize,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            expanded: MAX_EXPANDED,
            entries: MAX_ENTRIES,
        }
    }
}

/// [`extract`] within `limits`.
fn extract_within(archive: &Path, dir: &Path, limits: ZipLimits) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    let plan = plan(&mut zip, dir, limits)?;
    let mut made = Made::default();
    // The declared sizes were checked; what the entries really expand to is checked too.
    let mut budget = limits.expanded;
    let written = plan
        .iter()
        .enumerate()
        .try_for_each(|(i, entry)| write_entry(&mut zip, i, entry, &mut made, &mut budget));
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
fn plan(
    zip: &mut zip::ZipArchive<std::fs::File>,
    dir: &Path,
    limits: ZipLimits,
) -> Result<Vec<Entry>, String> {
    if zip.len() > limits.entries {
        return Err(format!(
            "{} entries, more than the limit of {}",
            zip.len(),
            limits.entries
        ));
    }
    let mut plan = Vec::with_capacity(zip.len());
    let mut names = std::collections::HashMap::new();
    let mut declared = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| e.to_string())?;
        declared = declared.saturating_add(entry.size());
        if declared > limits.expanded {
            return Err(format!(
                "expands to more than the limit of {} bytes",
                limits.expanded
            ));
        }
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
    budget: &mut u64,
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
    // At most one byte past the budget: enough to know it was passed.
    let copied = std::io::copy(&mut std::io::Read::take(&mut data, *budget + 1), &mut f)
        .map_err(|e| format!("{}: {e}", entry.out.display()))?;
    if copied > *budget {
        return Err(
            "expands to more than the limit (and more than its entries declare)".to_owned(),
        );
    }
    *budget -= copied;
    #[cfg(unix)]
    if let Some(mode) = entry.mode {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777));
    }
    Ok(())
}

/// Opens `path` for an upload, and its length: a regular file only, and the one at that
/// name, not what a symbolic link there points to (the file may have been swapped since it
/// was reported). Opened without blocking, so a FIFO put in its place fails at once instead
/// of waiting for a writer; the length is the opened file's.
fn open_regular(path: &std::path::Path) -> std::io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a symbolic link now; not followed",
            ),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file now",
        ));
    }
    Ok((file, meta.len()))
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
    let path = std::path::PathBuf::from(filepath);
    let (file, length) = tokio::task::spawn_blocking(move || open_regular(&path))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    let file = tokio::fs::File::from_std(file);
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
        .map_err(|e| failed(reqwest_message(e)))?;
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

    use super::{ZipLimits, extract, extract_within};

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
    fn an_archive_over_its_expansion_or_entry_bound_is_refused_and_leaves_nothing() {
        let dir = scratch("bomb");
        let archive = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        // 3 MiB of zeros each, a few KiB compressed (about 1,000:1).
        for name in ["a", "b", "c"] {
            zip.start_file(name, options).unwrap();
            zip.write_all(&vec![0u8; 3 << 20]).unwrap();
        }
        zip.finish().unwrap();
        let into = dir.join("out");
        let small = ZipLimits {
            expanded: 8 << 20,
            entries: 10,
        };
        let err = extract_within(&archive, &into, small).unwrap_err();
        assert!(
            err.contains("more than the limit of 8388608 bytes"),
            "{err}"
        );
        assert!(!into.exists(), "nothing written");
        let few = ZipLimits {
            expanded: 1 << 30,
            entries: 2,
        };
        let err = extract_within(&archive, &into, few).unwrap_err();
        assert!(err.contains("3 entries, more than the limit of 2"), "{err}");
        // Within its bounds it expands.
        extract_within(&archive, &into, ZipLimits::default()).unwrap();
        assert_eq!(std::fs::metadata(into.join("c")).unwrap().len(), 3 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A one-connection HTTP server on loopback that answers `head` then `body`, then stalls
    /// (`stall`) or closes; its base URL.
    async fn server(head: String, body: Vec<u8>, stall: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&body).await;
            if stall {
                std::future::pending::<()>().await;
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn downloadable(url: String, dir: &std::path::Path) -> runtimeuse_proto::Downloadable {
        runtimeuse_proto::Downloadable::new(url, dir.display().to_string())
    }

    #[tokio::test]
    async fn a_cut_download_leaves_no_partial_and_keeps_the_good_file() {
        let dir = scratch("cut");
        std::fs::write(dir.join("data.bin"), b"good").unwrap();
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n".to_owned();
        let base = server(head, vec![7u8; 1 << 20], false).await;
        let url = format!("{base}/data.bin?X-Amz-Signature=s3cr3t");
        let err = super::download(&downloadable(url, &dir)).await.unwrap_err();
        assert!(err.starts_with("Download failed: "), "{err}");
        assert!(err.contains(&format!("(GET {base}/data.bin)")), "{err}");
        assert!(!err.contains("s3cr3t"), "the query is a credential: {err}");
        // The good file stays as it was, and no partial file is left beside it.
        assert_eq!(std::fs::read(dir.join("data.bin")).unwrap(), b"good");
        assert_eq!(listing(&dir), ["data.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_download_over_the_cap_is_refused_before_its_body() {
        let dir = scratch("cap");
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 5u64 << 30);
        // The body never comes: refusing must not wait for it.
        let base = server(head, Vec::new(), true).await;
        let err = super::download(&downloadable(format!("{base}/big.bin"), &dir))
            .await
            .unwrap_err();
        assert!(err.contains("more than the limit of"), "{err}");
        assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_download_leaves_no_partial() {
        let dir = scratch("cancel");
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n".to_owned();
        let base = server(head, vec![7u8; 1 << 20], true).await;
        let d = downloadable(format!("{base}/data.bin"), &dir);
        let task = tokio::spawn(async move { super::download(&d).await });
        // The partial file fills, then the body stalls: cancel then.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let part = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() == 1 << 20));
            if part {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                listing(&dir)
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        let _ = task.await;
        assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn urls_are_shown_without_query_or_credentials() {
        assert_eq!(
            super::shown_url("https://user:pw@host:9/a/b.zip?sig=x#f"),
            "https://host:9/a/b.zip"
        );
        assert_eq!(super::shown_url("http://host"), "http://host");
        assert_eq!(super::shown_url("not a url?x"), "not a url");
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

    #[tokio::test]
    async fn a_reported_file_swapped_for_a_fifo_or_a_symlink_is_not_uploaded() {
        let dir = scratch("swapped");
        let target = dir.join("secret.txt");
        std::fs::write(&target, b"not for upload").unwrap();
        let link = dir.join("report.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.join("pipe.txt");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Nothing listens there: a file that was opened would fail at the connection.
        let to = runtimeuse_proto::ArtifactUpload::new("http://127.0.0.1:9/put", "text/plain");
        let redactor = runtimeuse_proto::runtime::Redactor::default();
        for (path, said) in [(&link, "symbolic link"), (&fifo, "not a regular file")] {
            let upload = super::upload(path.to_str().unwrap(), &to, &redactor);
            let err = tokio::time::timeout(std::time::Duration::from_secs(10), upload)
                .await
                .expect("the upload hung")
                .unwrap_err();
            assert!(err.contains(said), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_download_onto_a_fifo_replaces_it_without_waiting_for_a_reader() {
        let dir = scratch("onto-fifo");
        nix::unistd::mkfifo(&dir.join("data.bin"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".to_owned();
        let base = server(head, b"good".to_vec(), false).await;
        let d = downloadable(format!("{base}/data.bin"), &dir);
        tokio::time::timeout(std::time::Duration::from_secs(10), super::download(&d))
            .await
            .expect("the download hung")
            .unwrap();
        assert_eq!(std::fs::read(dir.join("data.bin")).unwrap(), b"good");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
