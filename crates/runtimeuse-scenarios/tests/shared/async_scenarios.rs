// The scenarios that only async clients have: a call future dropped midway, and callbacks that
// take too long. Included by the tokio and async-std test files after `scenarios.rs`; `B` is the
// adapter's backend.

scenario! {
    fn a_dropped_call_future_leaves_the_session_usable() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let cut = timeout::<B, _>(
            Duration::from_millis(200),
            session.query("STREAM:100000", opts()),
        )
        .await;
        assert!(cut.is_none(), "the call was cut short");
        let ok = wait!(session.query("ECHO:next", opts())).unwrap();
        assert_eq!(ok.text(), Some("next"));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn a_slow_callback_cancels_the_request_with_a_clear_error() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let options = opts()
            .callback_timeout(Duration::from_millis(100))
            .on_assistant_message(|_| futures_util::future::pending::<()>());
        let err = wait!(session.query("STREAM:3", options)).unwrap_err();
        assert!(
            matches!(err, Error::CallbackTimeout { callback: "on_assistant_message", .. }),
            "{err}"
        );
        assert_eq!(
            wait!(session.query("ECHO:still usable", opts())).unwrap().text(),
            Some("still usable")
        );
    }
}

scenario! {
    fn a_slow_uploader_is_declined_and_the_request_goes_on() {
        let rt = runtimeuse_scenarios::served();
        let dir = runtimeuse_scenarios::temp_dir("slow-uploader");
        let options = opts()
            .artifacts_dir(dir.to_string_lossy())
            .artifact_upload_callback_timeout(Duration::from_millis(100))
            .on_artifact_upload_request(|_| futures_util::future::pending::<ArtifactUpload>());
        let file = dir.join("late.txt");
        let result = wait!(Client::new(rt.url()).query(format!("WRITE_FILE:{} x", file.display()), options))
            .unwrap();
        assert_eq!(result.text().unwrap(), format!("wrote {}", file.display()));
    }
}

scenario! {
    fn the_assistant_callback_has_a_limit_of_its_own() {
        let rt = runtimeuse_scenarios::served();
        let options = opts()
            .callback_timeout(Duration::from_secs(60))
            .assistant_callback_timeout(Duration::from_millis(100))
            .on_assistant_message(|_| futures_util::future::pending::<()>());
        let started = Instant::now();
        let err = wait!(Client::new(rt.url()).query("STREAM:1", options)).unwrap_err();
        assert!(
            matches!(err, Error::CallbackTimeout { callback: "on_assistant_message", limit } if limit == Duration::from_millis(100)),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
