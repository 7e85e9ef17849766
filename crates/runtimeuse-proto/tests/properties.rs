//! Property tests: arbitrary frames and call sequences never panic, and every started request
//! ends with exactly one outcome (the checks live in `runtimeuse_proto::fuzzing`).

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        runtimeuse_proto::fuzzing::decode(&data);
    }

    #[test]
    fn arbitrary_json_objects_round_trip(
        kind in prop_oneof![
            Just("result_message"), Just("error_message"), Just("command_output_message"),
            Just("assistant_message"), Just("heartbeat_message"),
            Just("artifact_upload_request_message"), Just("command_execution_result_message"),
            Just("invocation_message"), Just("command_execution_message"),
            Just("artifact_upload_response_message"), Just("frobnicate_message"),
        ],
        text in "\\PC*",
        n in any::<i64>(),
        present in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let mut v = serde_json::json!({ "message_type": kind });
        let fields: [(&str, serde_json::Value); 8] = [
            ("text", text.clone().into()),
            ("stream", "stderr".into()),
            ("command", text.clone().into()),
            ("error", text.clone().into()),
            ("data", serde_json::json!({"type": "text", "text": text})),
            ("results", serde_json::json!([{"command": "c", "exit_code": n}])),
            ("user_prompt", text.clone().into()),
            ("commands", serde_json::json!([{"command": text}])),
        ];
        for ((name, value), on) in fields.into_iter().zip(present) {
            if on {
                v[name] = value;
            }
        }
        runtimeuse_proto::fuzzing::decode(v.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_call_sequences_end_every_request_once(ops in proptest::collection::vec(any::<u8>(), 0..400)) {
        runtimeuse_proto::fuzzing::session(&ops);
    }

    #[test]
    fn the_command_output_fast_path_agrees_with_serde(
        stream in "\\PC{0,8}",
        text in any::<String>(),
        command in "[ -~\n\t\u{0}-\u{1f}\u{7f}-\u{10ffff}]{0,40}",
        extra in proptest::option::of(("[a-z_]{1,12}", "\\PC{0,10}")),
    ) {
        let mut frame = format!(
            r#"{{"message_type":"command_output_message","stream":{},"text":{},"command":{}"#,
            serde_json::to_string(&stream).unwrap(),
            serde_json::to_string(&text).unwrap(),
            serde_json::to_string(&command).unwrap(),
        );
        if let Some((k, v)) = &extra {
            frame.push_str(&format!(",{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()));
        }
        frame.push('}');
        // The fuzz body asserts that the fast path and serde agree.
        runtimeuse_proto::fuzzing::decode(frame.as_bytes());
        let duplicate = extra.as_ref().is_some_and(|(k, _)| ["stream", "text", "command", "message_type"].contains(&k.as_str()));
        prop_assert_eq!(runtimeuse_proto::fuzzing::fast_path_accepts(frame.as_bytes()), !duplicate);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_runtime_call_sequences_never_leak_secrets(ops in proptest::collection::vec(any::<u8>(), 0..400)) {
        runtimeuse_proto::fuzzing::runtime_session(&ops);
    }
}
