//! A connection's artifact uploads: a few at a time, each tracked, so that a request's
//! terminal goes out only once the uploads it asked for are done, and a failed one is said.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtimeuse_proto::ArtifactUpload;
use runtimeuse_proto::runtime::Redactor;
use tokio::sync::{Notify, Semaphore};

use crate::http;

/// Uploads that run at once on one connection; more wait for a slot.
const CONCURRENT: usize = 4;

/// The uploads of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Uploads(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    slots: Semaphore,
    running: AtomicUsize,
    idle: Notify,
    failures: Mutex<Vec<String>>,
}

impl Default for Uploads {
    fn default() -> Self {
        Self(Arc::new(Inner {
            slots: Semaphore::new(CONCURRENT),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            failures: Mutex::new(Vec::new()),
        }))
    }
}

/// Counts an upload as running until it is dropped, however its task ends.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Uploads {
    /// Starts uploading `filepath` as the client answered, telling `done` whether it worked.
    /// The upload goes on if the connection ends: the client asked for the file.
    pub(crate) fn start(
        &self,
        filepath: String,
        upload: ArtifactUpload,
        redactor: Redactor,
        done: impl FnOnce(bool) + Send + 'static,
    ) {
        self.0.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(Arc::clone(&self.0));
        tokio::spawn(async move {
            let inner = &running.0;
            let Ok(_slot) = inner.slots.acquire().await else {
                return;
            };
            let uploaded = http::upload(&filepath, &upload, &redactor).await;
            done(uploaded.is_ok());
            if let Err(e) = uploaded {
                tracing::warn!(error = %e, "artifact upload failed");
                if let Ok(mut failures) = inner.failures.lock() {
                    failures.push(e);
                }
            }
        });
    }

    /// Waits until no upload runs, `limit` at most. Returns what failed since the last call,
    /// and a line for the uploads still running at the limit.
    pub(crate) async fn finish(&self, limit: Duration) -> Vec<String> {
        let inner = &self.0;
        let all_done = async {
            loop {
                let idle = inner.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if inner.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let late = tokio::time::timeout(limit, all_done).await.is_err();
        let mut failures = inner
            .failures
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        if late {
            let running = inner.running.load(Ordering::Acquire);
            failures.push(format!(
                "{running} artifact upload(s) still running after {} s",
                limit.as_secs()
            ));
        }
        failures
    }
}
