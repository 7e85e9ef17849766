//! The two faults whose outcome is a default limit (tens of seconds), run once each and at the
//! same time, with the tokio client and default settings: a runtime that stalls (its pings
//! answered, nothing else sent) fails the request at the default idle limit (60 s); one that
//! freezes (nothing answered) is found dead by keepalive (a ping after 20 s of silence, no
//! pong within 20 s). Neither hangs the call.

use std::time::{Duration, Instant};

use runtimeuse_scenarios::Fault;
use runtimeuse_tokio::TimeoutKind;
use runtimeuse_tokio::{Client, Error, QueryOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_60_s_for_the_default_limits_to_end_a_stalled_and_a_frozen_runtime() {
    let rt = runtimeuse_scenarios::served();
    let stall = rt.fault_proxy(Fault::Stall, 1);
    let freeze = rt.fault_proxy(Fault::Freeze, 1);
    let run = |url: String| async move {
        let started = Instant::now();
        let outcome = Client::new(url)
            .query("STREAM:3", QueryOptions::new("", "m"))
            .await;
        (outcome, started.elapsed())
    };
    let ((stalled, stall_time), (frozen, freeze_time)) =
        tokio::join!(run(stall.url()), run(freeze.url()));
    assert!(
        matches!(stalled, Err(Error::Timeout { kind: TimeoutKind::Idle(d), .. }) if d == Duration::from_secs(60)),
        "{stalled:?}"
    );
    assert!(
        stall_time >= Duration::from_secs(59) && stall_time < Duration::from_secs(70),
        "{stall_time:?}"
    );
    assert!(matches!(frozen, Err(Error::KeepAliveTimeout)), "{frozen:?}");
    assert!(
        freeze_time >= Duration::from_secs(39) && freeze_time < Duration::from_secs(50),
        "{freeze_time:?}"
    );
}
