//! Downloads before a request (with `.zip` extraction) and artifact uploads (HTTP PUT).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use runtimeuse_proto::{ArtifactUpload, Downloadable};

/// Largest download accepted.
const MAX_DOWNLOAD: u64 = 4 << 30;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into()
}

/// Downloads a file into its working directory (created when missing); a `.zip` is extracted
/// there and removed. Returns the error text the request fails with.
pub(crate) async fn download(d: &Downloadable) -> Result<(), String> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || download_blocking(&d))
        .await
        .map_err(|e| format!("Download failed: {e}"))?
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

fn download_blocking(d: &Downloadable) -> Result<(), String> {
    let dir = PathBuf::from(&d.working_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("Download failed: {}: {e}", dir.display()))?;
    let response = agent()
        .get(&d.download_url)
        .call()
        .map_err(|e| format!("Download failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "Download failed: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    let target = dir.join(file_name(&d.download_url));
    let mut file = std::fs::File::create(&target)
        .map_err(|e| format!("Download failed: {}: {e}", target.display()))?;
    let mut body = response.into_body();
    let mut reader = body.as_reader().take(MAX_DOWNLOAD);
    std::io::copy(&mut reader, &mut file).map_err(|e| format!("Download failed: {e}"))?;
    file.flush().map_err(|e| format!("Download failed: {e}"))?;
    drop(file);
    if target
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        let extracted = extract(&target, &dir);
        // The archive goes whether or not it could be extracted.
        let removed = std::fs::remove_file(&target);
        extracted.map_err(|e| format!("Download failed: extracting: {e}"))?;
        removed.map_err(|e| format!("Download failed: {e}"))?;
    }
    Ok(())
}

/// Extracts a zip archive into `dir`. An archive with any entry that would land outside `dir`
/// is refused before anything is written.
pub(crate) fn extract(archive: &Path, dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| e.to_string())?;
        if entry.enclosed_name().is_none() {
            return Err(format!("unsafe path in archive: {:?}", entry.name()));
        }
    }
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!("unsafe path in archive: {:?}", entry.name()));
        };
        let out = dir.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut f).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

/// PUTs an artifact to its presigned URL with the given content type. Failures are logged:
/// nothing on the wire reports them.
pub(crate) async fn upload(filepath: String, upload: ArtifactUpload) {
    let result = tokio::task::spawn_blocking(move || -> Result<u16, String> {
        let mut body = Vec::new();
        std::fs::File::open(&filepath)
            .and_then(|mut f| f.read_to_end(&mut body))
            .map_err(|e| format!("{filepath}: {e}"))?;
        let response = agent()
            .put(&upload.presigned_url)
            .header("Content-Type", &upload.content_type)
            .send(&body[..])
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    })
    .await;
    match result {
        Ok(Ok(status)) if (200..300).contains(&status) => {
            tracing::debug!(status, "artifact uploaded")
        }
        Ok(Ok(status)) => tracing::warn!(status, "artifact upload refused"),
        Ok(Err(e)) => tracing::warn!(error = %e, "artifact upload failed"),
        Err(e) => tracing::warn!(error = %e, "artifact upload task failed"),
    }
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
}
