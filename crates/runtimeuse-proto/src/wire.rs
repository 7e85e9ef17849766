//! The JSON wire format of protocol 0.15.1, both directions.
//!
//! This is the only module that knows `message_type` strings and field names. Decoding is one pass
//! of serde over a flat, borrowing struct ([`RawRuntimeMessage`], [`RawClientMessage`]) whose
//! fields are the union of every message's fields; the typed message is then assembled from it by
//! `message_type`. That keeps the hot path (`command_output_message`) free of
//! `serde_json::Value` and, when the text has no escapes, of allocations during parsing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::request::{ArtifactUpload, Command, CommandBatch, Downloadable, Invocation};

/// Why a frame from the peer could not be decoded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The frame is not valid UTF-8 (JSON must be).
    #[error("frame is not valid utf-8")]
    InvalidUtf8,
    /// The frame is not a JSON object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// The JSON is malformed, too deeply nested, or a field has the wrong type.
    #[error("invalid json: {0}")]
    Json(#[source] serde_json::Error),
    /// The object has no string `message_type`.
    #[error("frame has no message_type")]
    NoMessageType,
    /// A required field of a known message is missing or null.
    #[error("{message_type} is missing the field {field}")]
    MissingField {
        /// The message's `message_type`.
        message_type: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// The kind of a message the runtime sends, as named by its `message_type`.
///
/// Used in timeout diagnostics ([`Diagnostics::last_message`](crate::Diagnostics)) and in logs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `result_message`: the terminal of a query.
    Result,
    /// `assistant_message`: streamed assistant text.
    Assistant,
    /// `command_output_message`: a chunk of a command's stdout or stderr.
    CommandOutput,
    /// `heartbeat_message`: the runtime is alive.
    Heartbeat,
    /// `artifact_upload_request_message`: the runtime asks where to upload a file.
    ArtifactUploadRequest,
    /// `error_message`: an error, terminal or not.
    Error,
    /// `command_execution_result_message`: the terminal of a command batch.
    CommandExecutionResult,
    /// `end_session_confirm_message`: the runtime confirms the end of the session.
    EndSessionConfirm,
}

impl MessageKind {
    /// The `message_type` string of this kind on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Result => "result_message",
            Self::Assistant => "assistant_message",
            Self::CommandOutput => "command_output_message",
            Self::Heartbeat => "heartbeat_message",
            Self::ArtifactUploadRequest => "artifact_upload_request_message",
            Self::Error => "error_message",
            Self::CommandExecutionResult => "command_execution_result_message",
            Self::EndSessionConfirm => "end_session_confirm_message",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "result_message" => Self::Result,
            "assistant_message" => Self::Assistant,
            "command_output_message" => Self::CommandOutput,
            "heartbeat_message" => Self::Heartbeat,
            "artifact_upload_request_message" => Self::ArtifactUploadRequest,
            "error_message" => Self::Error,
            "command_execution_result_message" => Self::CommandExecutionResult,
            "end_session_confirm_message" => Self::EndSessionConfirm,
            _ => return None,
        })
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a message the client sends, as named by its `message_type`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientMessageKind {
    /// `invocation_message`: start a query.
    Invocation,
    /// `command_execution_message`: start a command batch.
    CommandExecution,
    /// `artifact_upload_response_message`: where to upload a requested artifact.
    ArtifactUploadResponse,
    /// `cancel_message`: cancel the request in flight.
    Cancel,
    /// `end_session_message`: end the session gracefully.
    EndSession,
}

impl ClientMessageKind {
    /// The `message_type` string of this kind on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invocation => "invocation_message",
            Self::CommandExecution => "command_execution_message",
            Self::ArtifactUploadResponse => "artifact_upload_response_message",
            Self::Cancel => "cancel_message",
            Self::EndSession => "end_session_message",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "invocation_message" => Self::Invocation,
            "command_execution_message" => Self::CommandExecution,
            "artifact_upload_response_message" => Self::ArtifactUploadResponse,
            "cancel_message" => Self::Cancel,
            "end_session_message" => Self::EndSession,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ClientMessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime -> client
// ---------------------------------------------------------------------------------------------

/// A decoded runtime message. Strings borrow from the frame where they have no escapes.
#[derive(Debug)]
pub(crate) enum RuntimeMessage<'a> {
    Result {
        data: WireResultData,
        metadata: Value,
    },
    Assistant {
        text_blocks: Vec<String>,
    },
    CommandOutput {
        stream: Cow<'a, str>,
        text: Cow<'a, str>,
        command: Cow<'a, str>,
    },
    Heartbeat {
        phase: Option<String>,
        elapsed_ms: Option<u64>,
    },
    ArtifactUploadRequest {
        filename: String,
        filepath: String,
    },
    Error {
        error: String,
        metadata: Value,
    },
    CommandExecutionResult {
        results: Vec<WireCommandResultItem>,
    },
    EndSessionConfirm,
}

impl RuntimeMessage<'_> {
    pub(crate) fn kind(&self) -> MessageKind {
        match self {
            Self::Result { .. } => MessageKind::Result,
            Self::Assistant { .. } => MessageKind::Assistant,
            Self::CommandOutput { .. } => MessageKind::CommandOutput,
            Self::Heartbeat { .. } => MessageKind::Heartbeat,
            Self::ArtifactUploadRequest { .. } => MessageKind::ArtifactUploadRequest,
            Self::Error { .. } => MessageKind::Error,
            Self::CommandExecutionResult { .. } => MessageKind::CommandExecutionResult,
            Self::EndSessionConfirm => MessageKind::EndSessionConfirm,
        }
    }
}

/// `result_message.data`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireResultData {
    Text { text: String },
    StructuredOutput { structured_output: Value },
}

/// One item of `command_execution_result_message.results`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub(crate) struct WireCommandResultItem {
    pub(crate) command: String,
    pub(crate) exit_code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stdout: Option<String>,
}

/// An optional string that borrows from the frame when it has no escapes; `null` and absent
/// are `None`.
///
/// serde's own `Cow<str>` borrows only when it is not wrapped in an `Option`
/// (serde-rs/serde#1497), and `Option`'s own impl costs a second dispatch on the hot path, so
/// the flat message structs use this with `#[serde(default)]` instead.
#[derive(Debug, Default)]
struct Str<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Str(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Str(None))
            }
        }
        d.deserialize_any(V)
    }
}

fn cow(s: Str<'_>) -> Option<Cow<'_, str>> {
    s.0
}

/// Parses a frame as JSON. Parsing from `&str` (UTF-8 validated once for the whole frame, or
/// already by the WebSocket layer for text frames) is cheaper than serde_json validating each
/// string of a byte slice.
fn parse<'a, T: Deserialize<'a>>(frame: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(frame).map_err(DecodeError::Json)
}

/// The fields of the client's messages, by their wire names: the only names a description
/// of a malformed frame may quote (anything else in the frame may be a secret).
const CLIENT_FIELDS: &[&str] = &[
    "message_type",
    "user_prompt",
    "system_prompt",
    "model",
    "output_format_json_schema_str",
    "source_id",
    "agent_env",
    "secrets_to_redact",
    "artifacts_dirs",
    "artifacts_ignore_content",
    "pre_agent_invocation_commands",
    "post_agent_invocation_commands",
    "pre_agent_downloadables",
    "pre_execution_downloadables",
    "commands",
    "command",
    "cwd",
    "env",
    "download_url",
    "working_dir",
    "filename",
    "filepath",
    "presigned_url",
    "content_type",
];

/// What is wrong with a client's frame, without any of its values: the category, the field
/// (when it is one of the protocol's), what was expected and the position. serde_json's own
/// text quotes the offending value (`invalid type: string "OPENAI_API_KEY=sk-…"`), which may
/// be a secret the request itself meant to redact.
pub(crate) fn describe(err: &DecodeError, frame: &str) -> String {
    let DecodeError::Json(e) = err else {
        return err.to_string();
    };
    let position = format!("at line {} column {}", e.line(), e.column());
    if !e.is_data() {
        // Syntax and end-of-input messages name tokens, never values.
        return format!("invalid json: {e}");
    }
    let text = e.to_string();
    let expected = text
        .split_once(", expected ")
        .map(|(_, rest)| rest.rsplit_once(" at line ").map_or(rest, |(x, _)| x));
    let what = match text.strip_prefix("invalid type: ") {
        Some(rest) => {
            let kind = rest.split([' ', ',']).next().unwrap_or("value");
            format!("wrong type ({kind})")
        }
        None if text.starts_with("unknown variant") => "unknown variant".to_owned(),
        None if text.starts_with("missing field") => text
            .split_once(" at line ")
            .map_or(text.clone(), |(m, _)| m.to_owned()),
        None => "invalid value".to_owned(),
    };
    let field = field_before(frame, e.line(), e.column())
        .map(|f| format!(" in field {f}"))
        .unwrap_or_default();
    match expected {
        Some(x) => format!("invalid json: {what}{field}, expected {x}, {position}"),
        None => format!("invalid json: {what}{field}, {position}"),
    }
}

/// The protocol field whose value ends at `line`:`column` of `frame`: the last `"name":`
/// before it, when `name` is one of [`CLIENT_FIELDS`].
fn field_before(frame: &str, line: usize, column: usize) -> Option<&'static str> {
    let start: usize = frame
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let end = (start + column).min(frame.len());
    let before = frame.get(..end)?;
    let mut best: Option<(usize, &'static str)> = None;
    for name in CLIENT_FIELDS {
        let key = format!("\"{name}\"");
        if let Some(at) = before.rfind(&key)
            && before[at + key.len()..].trim_start().starts_with(':')
            && best.is_none_or(|(b, _)| at > b)
        {
            best = Some((at, name));
        }
    }
    best.map(|(_, name)| name)
}

/// A received frame: text (already valid UTF-8) or bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frame<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The frame as text, after the size limit and the UTF-8 check.
    fn text(self, max_size: usize) -> Result<&'a str, DecodeError> {
        let len = match self {
            Frame::Text(t) => t.len(),
            Frame::Bytes(b) => b.len(),
        };
        if len > max_size {
            return Err(DecodeError::TooLarge {
                size: len,
                limit: max_size,
            });
        }
        let text = match self {
            Frame::Text(t) => t,
            Frame::Bytes(b) => std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8)?,
        };
        match text.bytes().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(text),
            _ => Err(DecodeError::NotAnObject),
        }
    }
}

/// The union of every runtime message's fields, parsed in one pass.
///
/// Fields of other message types are ignored by [`decode_runtime`]; unknown fields are skipped
/// by serde; `null` equals absent.
#[derive(Deserialize)]
struct RawRuntimeMessage<'a> {
    #[serde(borrow, default)]
    message_type: Str<'a>,
    // command_output_message (hot path: borrowed)
    #[serde(borrow, default)]
    stream: Str<'a>,
    #[serde(borrow, default)]
    text: Str<'a>,
    #[serde(borrow, default)]
    command: Str<'a>,
    // result_message / error_message
    data: Option<Value>,
    metadata: Option<Value>,
    error: Option<String>,
    // assistant_message
    text_blocks: Option<Vec<String>>,
    // heartbeat_message
    phase: Option<String>,
    elapsed_ms: Option<u64>,
    // artifact_upload_request_message
    filename: Option<String>,
    filepath: Option<String>,
    // command_execution_result_message
    results: Option<Vec<WireCommandResultItem>>,
}

/// `command_output_message` alone: the hot path. A small struct, so that serde moves little.
#[derive(Deserialize)]
struct RawCommandOutput<'a> {
    #[serde(borrow, default)]
    stream: Str<'a>,
    #[serde(borrow, default)]
    text: Str<'a>,
    #[serde(borrow, default)]
    command: Str<'a>,
}

/// How the upstream runtime (and ours) starts every `command_output_message`: compact JSON with
/// `message_type` first. Frames that start otherwise take the general path.
const COMMAND_OUTPUT_PREFIX: &[u8] = br#"{"message_type":"command_output_message","#;

/// Decodes a frame that starts with [`COMMAND_OUTPUT_PREFIX`]: the hand-written scanner when
/// the frame is as the runtime writes it, serde otherwise.
#[inline]
fn decode_command_output(frame: &str) -> Result<Decoded<'_, RuntimeMessage<'_>>, DecodeError> {
    let rest = frame.get(COMMAND_OUTPUT_PREFIX.len()..).unwrap_or("");
    let (stream, text, command) = match crate::fast::command_output(rest) {
        Some(fields) => fields,
        None => {
            // The peeked tag decides the type; `message_type` itself is skipped by serde as
            // an unknown field of the small struct.
            let raw: RawCommandOutput<'_> = parse(frame)?;
            (cow(raw.stream), cow(raw.text), cow(raw.command))
        }
    };
    let name = MessageKind::CommandOutput.as_str();
    Ok(Decoded::Message(RuntimeMessage::CommandOutput {
        stream: stream.ok_or_else(|| missing(name, "stream"))?,
        text: text.ok_or_else(|| missing(name, "text"))?,
        command: command.unwrap_or(Cow::Borrowed("")),
    }))
}

/// Decodes a `command_output_message` with serde only, for the fuzz target's differential
/// check of the fast path.
#[cfg(any(fuzzing, feature = "__fuzzing"))]
pub(crate) fn decode_command_output_serde(
    frame: &str,
) -> Result<crate::fast::Fields<'_>, DecodeError> {
    let raw: RawCommandOutput<'_> = parse(frame)?;
    Ok((cow(raw.stream), cow(raw.text), cow(raw.command)))
}

/// What decoding a runtime frame produced.
#[derive(Debug)]
pub(crate) enum Decoded<'a, M> {
    /// A known message.
    Message(M),
    /// Valid JSON object with a `message_type` this version does not know: skip it.
    Unknown(Cow<'a, str>),
}

fn missing(kind: &'static str, field: &'static str) -> DecodeError {
    DecodeError::MissingField {
        message_type: kind,
        field,
    }
}

/// Decodes one frame sent by the runtime.
#[inline]
pub(crate) fn decode_runtime(
    frame: Frame<'_>,
    max_size: usize,
) -> Result<Decoded<'_, RuntimeMessage<'_>>, DecodeError> {
    let frame = frame.text(max_size)?;
    if frame.as_bytes().starts_with(COMMAND_OUTPUT_PREFIX) {
        return decode_command_output(frame);
    }
    let raw: RawRuntimeMessage<'_> = parse(frame)?;
    let Some(message_type) = cow(raw.message_type) else {
        return Err(DecodeError::NoMessageType);
    };
    let Some(kind) = MessageKind::from_wire(&message_type) else {
        return Ok(Decoded::Unknown(message_type));
    };
    let name = kind.as_str();
    let message = match kind {
        MessageKind::CommandOutput => RuntimeMessage::CommandOutput {
            stream: cow(raw.stream).ok_or_else(|| missing(name, "stream"))?,
            text: cow(raw.text).ok_or_else(|| missing(name, "text"))?,
            command: cow(raw.command).unwrap_or(Cow::Borrowed("")),
        },
        MessageKind::Result => {
            let data = raw.data.ok_or_else(|| missing(name, "data"))?;
            let data = WireResultData::deserialize(data).map_err(DecodeError::Json)?;
            RuntimeMessage::Result {
                data,
                metadata: raw.metadata.unwrap_or(Value::Null),
            }
        }
        MessageKind::Assistant => RuntimeMessage::Assistant {
            text_blocks: raw
                .text_blocks
                .ok_or_else(|| missing(name, "text_blocks"))?,
        },
        MessageKind::Heartbeat => RuntimeMessage::Heartbeat {
            phase: raw.phase,
            elapsed_ms: raw.elapsed_ms,
        },
        MessageKind::ArtifactUploadRequest => RuntimeMessage::ArtifactUploadRequest {
            filename: raw.filename.ok_or_else(|| missing(name, "filename"))?,
            filepath: raw.filepath.ok_or_else(|| missing(name, "filepath"))?,
        },
        MessageKind::Error => RuntimeMessage::Error {
            error: raw.error.ok_or_else(|| missing(name, "error"))?,
            metadata: raw.metadata.unwrap_or(Value::Null),
        },
        MessageKind::CommandExecutionResult => RuntimeMessage::CommandExecutionResult {
            results: raw.results.ok_or_else(|| missing(name, "results"))?,
        },
        MessageKind::EndSessionConfirm => RuntimeMessage::EndSessionConfirm,
    };
    Ok(Decoded::Message(message))
}

/// Peeks at the `message_type` of a frame that failed to decode, to tell whether it claimed to be
/// a terminal message. Only called on the error path.
pub(crate) fn peek_runtime_kind(frame: Frame<'_>) -> Option<MessageKind> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow, default)]
        message_type: Str<'a>,
    }
    let frame = frame.text(usize::MAX).ok()?;
    let env: Envelope<'_> = parse(frame).ok()?;
    MessageKind::from_wire(&env.message_type.0?)
}

// --- runtime -> client encoding (used by the runtime role) ---

// Used by the runtime role and the tests.
#[derive(Serialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub(crate) enum RuntimeFrame<'a> {
    #[serde(rename = "result_message")]
    Result {
        metadata: &'a Value,
        data: &'a WireResultData,
    },
    #[serde(rename = "assistant_message")]
    Assistant { text_blocks: &'a [String] },
    #[serde(rename = "command_output_message")]
    CommandOutput {
        stream: &'a str,
        text: &'a str,
        command: &'a str,
    },
    #[serde(rename = "heartbeat_message")]
    Heartbeat { phase: &'a str, elapsed_ms: u64 },
    #[serde(rename = "artifact_upload_request_message")]
    ArtifactUploadRequest {
        filename: &'a str,
        filepath: &'a str,
    },
    #[serde(rename = "error_message")]
    Error { error: &'a str, metadata: &'a Value },
    #[serde(rename = "command_execution_result_message")]
    CommandExecutionResult {
        results: &'a [WireCommandResultItem],
    },
    #[serde(rename = "end_session_confirm_message")]
    EndSessionConfirm,
}

impl RuntimeFrame<'_> {
    /// Serializes the frame as compact JSON, `message_type` first, as the upstream runtime does.
    pub(crate) fn encode(&self) -> String {
        if let RuntimeFrame::CommandOutput {
            stream,
            text,
            command,
        } = self
        {
            return encode_command_output(stream, text, command);
        }
        // Serializing these types cannot fail: every map key is a string and no Serialize impl
        // returns an error.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `command_output_message` written by hand, byte for byte what serde_json writes (a test
/// compares them): most of what a runtime sends, often in 64 KiB chunks, where serde_json
/// escapes a byte at a time into a buffer that doubles as it goes.
fn encode_command_output(stream: &str, text: &str, command: &str) -> String {
    const HEAD: &str = r#"{"message_type":"command_output_message","stream":"#;
    // Room for the text with a few escapes; one allocation for typical output.
    let mut out =
        String::with_capacity(HEAD.len() + 32 + stream.len() + command.len() + text.len() * 9 / 8);
    out.push_str(HEAD);
    escape_into(&mut out, stream);
    out.push_str(r#","text":"#);
    escape_into(&mut out, text);
    out.push_str(r#","command":"#);
    escape_into(&mut out, command);
    out.push('}');
    out
}

/// Appends `s` as a JSON string, escaped as serde_json does: `\"`, `\\`, the short forms
/// `\b \f \n \r \t`, and `\u00xx` for the other control characters. Runs of plain bytes are
/// found eight at a time and copied at once.
fn escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push('"');
    let mut at = 0;
    loop {
        let stop = crate::fast::special(bytes, at);
        out.push_str(s.get(at..stop).unwrap_or_default());
        let Some(&b) = bytes.get(stop) else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        at = stop + 1;
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Client -> runtime
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct WireCommand<'a> {
    cwd: Option<&'a str>,
    command: &'a str,
    env: Option<&'a BTreeMap<String, String>>,
}

impl<'a> From<&'a Command> for WireCommand<'a> {
    fn from(c: &'a Command) -> Self {
        WireCommand {
            cwd: c.cwd.as_deref(),
            command: &c.command,
            env: c.env.as_ref(),
        }
    }
}

#[derive(Serialize)]
struct WireDownloadable<'a> {
    download_url: &'a str,
    working_dir: &'a str,
}

fn commands(list: &Option<Vec<Command>>) -> Option<Vec<WireCommand<'_>>> {
    list.as_ref()
        .map(|l| l.iter().map(WireCommand::from).collect())
}

fn downloadables(list: &Option<Vec<Downloadable>>) -> Option<Vec<WireDownloadable<'_>>> {
    list.as_ref().map(|l| {
        l.iter()
            .map(|d| WireDownloadable {
                download_url: &d.download_url,
                working_dir: &d.working_dir,
            })
            .collect()
    })
}

/// An empty list of artifact directories means none, and goes out as `null`.
fn artifacts_dirs(dirs: &[String]) -> Option<&[String]> {
    (!dirs.is_empty()).then_some(dirs)
}

/// `invocation_message`, field for field in the order the Python client 0.15.1 sends.
#[derive(Serialize)]
struct WireInvocation<'a> {
    message_type: &'static str,
    source_id: Option<&'a str>,
    system_prompt: &'a str,
    user_prompt: &'a str,
    agent_env: Option<&'a BTreeMap<String, String>>,
    output_format_json_schema_str: Option<&'a str>,
    secrets_to_redact: &'a [String],
    artifacts_dirs: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifacts_dir: Option<Option<&'a str>>,
    artifacts_ignore_content: Option<&'a str>,
    pre_agent_invocation_commands: Option<Vec<WireCommand<'a>>>,
    post_agent_invocation_commands: Option<Vec<WireCommand<'a>>>,
    model: &'a str,
    pre_agent_downloadables: Option<Vec<WireDownloadable<'a>>>,
}

/// `command_execution_message`, in the order the Python client 0.15.1 sends.
#[derive(Serialize)]
struct WireCommandExecution<'a> {
    message_type: &'static str,
    source_id: Option<&'a str>,
    secrets_to_redact: &'a [String],
    commands: Vec<WireCommand<'a>>,
    artifacts_dirs: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifacts_dir: Option<Option<&'a str>>,
    artifacts_ignore_content: Option<&'a str>,
    pre_execution_downloadables: Option<Vec<WireDownloadable<'a>>>,
}

#[derive(Serialize)]
struct WireArtifactUploadResponse<'a> {
    message_type: &'static str,
    filename: &'a str,
    filepath: &'a str,
    presigned_url: &'a str,
    content_type: &'a str,
}

#[derive(Serialize)]
struct WireBare {
    message_type: &'static str,
}

fn to_string<T: Serialize>(value: &T) -> String {
    // Serializing these types cannot fail: every map key is a string and no Serialize impl
    // returns an error.
    serde_json::to_string(value).unwrap_or_default()
}

fn legacy_dir(legacy: bool, dirs: &[String]) -> Option<Option<&str>> {
    legacy.then(|| dirs.first().map(String::as_str))
}

pub(crate) fn encode_invocation(inv: &Invocation, legacy_artifacts_dir: bool) -> String {
    to_string(&WireInvocation {
        message_type: ClientMessageKind::Invocation.as_str(),
        source_id: inv.source_id.as_deref(),
        system_prompt: &inv.system_prompt,
        user_prompt: &inv.user_prompt,
        agent_env: inv.agent_env.as_ref(),
        output_format_json_schema_str: inv.output_format_json_schema.as_deref(),
        secrets_to_redact: &inv.secrets_to_redact,
        artifacts_dirs: artifacts_dirs(&inv.artifacts_dirs),
        artifacts_dir: legacy_dir(legacy_artifacts_dir, &inv.artifacts_dirs),
        artifacts_ignore_content: inv.artifacts_ignore_content.as_deref(),
        pre_agent_invocation_commands: commands(&inv.pre_agent_invocation_commands),
        post_agent_invocation_commands: commands(&inv.post_agent_invocation_commands),
        model: &inv.model,
        pre_agent_downloadables: downloadables(&inv.pre_agent_downloadables),
    })
}

pub(crate) fn encode_command_batch(batch: &CommandBatch, legacy_artifacts_dir: bool) -> String {
    to_string(&WireCommandExecution {
        message_type: ClientMessageKind::CommandExecution.as_str(),
        source_id: batch.source_id.as_deref(),
        secrets_to_redact: &batch.secrets_to_redact,
        commands: batch.commands.iter().map(WireCommand::from).collect(),
        artifacts_dirs: artifacts_dirs(&batch.artifacts_dirs),
        artifacts_dir: legacy_dir(legacy_artifacts_dir, &batch.artifacts_dirs),
        artifacts_ignore_content: batch.artifacts_ignore_content.as_deref(),
        pre_execution_downloadables: downloadables(&batch.pre_execution_downloadables),
    })
}

pub(crate) fn encode_artifact_upload_response(
    filename: &str,
    filepath: &str,
    upload: &ArtifactUpload,
) -> String {
    to_string(&WireArtifactUploadResponse {
        message_type: ClientMessageKind::ArtifactUploadResponse.as_str(),
        filename,
        filepath,
        presigned_url: &upload.presigned_url,
        content_type: &upload.content_type,
    })
}

pub(crate) fn encode_cancel() -> String {
    to_string(&WireBare {
        message_type: ClientMessageKind::Cancel.as_str(),
    })
}

pub(crate) fn encode_end_session() -> String {
    to_string(&WireBare {
        message_type: ClientMessageKind::EndSession.as_str(),
    })
}

// --- client -> runtime decoding (used by the runtime role and by tests) ---

#[derive(Deserialize)]
struct RawCommand {
    command: String,
    cwd: Option<String>,
    env: Option<BTreeMap<String, String>>,
}

impl From<RawCommand> for Command {
    fn from(c: RawCommand) -> Self {
        Command {
            command: c.command,
            cwd: c.cwd,
            env: c.env,
        }
    }
}

#[derive(Deserialize)]
struct RawDownloadable {
    download_url: String,
    working_dir: String,
}

impl From<RawDownloadable> for Downloadable {
    fn from(d: RawDownloadable) -> Self {
        Downloadable {
            download_url: d.download_url,
            working_dir: d.working_dir,
        }
    }
}

/// The union of every client message's fields.
#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(borrow, default)]
    message_type: Str<'a>,
    source_id: Option<String>,
    system_prompt: Option<String>,
    user_prompt: Option<String>,
    model: Option<String>,
    agent_env: Option<BTreeMap<String, String>>,
    output_format_json_schema_str: Option<String>,
    secrets_to_redact: Option<Vec<String>>,
    artifacts_dirs: Option<Vec<String>>,
    artifacts_dir: Option<String>,
    artifacts_ignore_content: Option<String>,
    pre_agent_invocation_commands: Option<Vec<RawCommand>>,
    post_agent_invocation_commands: Option<Vec<RawCommand>>,
    pre_agent_downloadables: Option<Vec<RawDownloadable>>,
    commands: Option<Vec<RawCommand>>,
    pre_execution_downloadables: Option<Vec<RawDownloadable>>,
    filename: Option<String>,
    filepath: Option<String>,
    presigned_url: Option<String>,
    content_type: Option<String>,
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientMessage {
    Invocation(Invocation),
    CommandExecution(CommandBatch),
    ArtifactUploadResponse {
        filename: String,
        filepath: String,
        upload: ArtifactUpload,
    },
    Cancel,
    EndSession,
}

fn merge_dirs(dirs: Option<Vec<String>>, legacy: Option<String>) -> Vec<String> {
    let mut dirs = dirs.unwrap_or_default();
    if let Some(dir) = legacy
        && !dirs.contains(&dir)
    {
        dirs.push(dir);
    }
    dirs
}

fn cmds(list: Option<Vec<RawCommand>>) -> Option<Vec<Command>> {
    list.map(|l| l.into_iter().map(Command::from).collect())
}

fn dls(list: Option<Vec<RawDownloadable>>) -> Option<Vec<Downloadable>> {
    list.map(|l| l.into_iter().map(Downloadable::from).collect())
}

/// Decodes one frame sent by a client.
///
/// Lenient where the upstream runtime is: an invocation needs only `user_prompt`, and
/// `system_prompt` and `model` default to empty strings.
pub(crate) fn decode_client(
    frame: Frame<'_>,
    max_size: usize,
) -> Result<Decoded<'_, ClientMessage>, DecodeError> {
    let frame = frame.text(max_size)?;
    let raw: RawClientMessage<'_> = parse(frame)?;
    let Some(message_type) = cow(raw.message_type) else {
        return Err(DecodeError::NoMessageType);
    };
    let Some(kind) = ClientMessageKind::from_wire(&message_type) else {
        return Ok(Decoded::Unknown(message_type));
    };
    let name = kind.as_str();
    let message = match kind {
        ClientMessageKind::Invocation => ClientMessage::Invocation(Invocation {
            user_prompt: raw
                .user_prompt
                .ok_or_else(|| missing(name, "user_prompt"))?,
            system_prompt: raw.system_prompt.unwrap_or_default(),
            model: raw.model.unwrap_or_default(),
            output_format_json_schema: raw.output_format_json_schema_str,
            source_id: raw.source_id,
            agent_env: raw.agent_env,
            secrets_to_redact: raw.secrets_to_redact.unwrap_or_default(),
            artifacts_dirs: merge_dirs(raw.artifacts_dirs, raw.artifacts_dir),
            artifacts_ignore_content: raw.artifacts_ignore_content,
            pre_agent_invocation_commands: cmds(raw.pre_agent_invocation_commands),
            post_agent_invocation_commands: cmds(raw.post_agent_invocation_commands),
            pre_agent_downloadables: dls(raw.pre_agent_downloadables),
            output_schema_error: None,
        }),
        ClientMessageKind::CommandExecution => ClientMessage::CommandExecution(CommandBatch {
            commands: cmds(raw.commands).ok_or_else(|| missing(name, "commands"))?,
            source_id: raw.source_id,
            secrets_to_redact: raw.secrets_to_redact.unwrap_or_default(),
            artifacts_dirs: merge_dirs(raw.artifacts_dirs, raw.artifacts_dir),
            artifacts_ignore_content: raw.artifacts_ignore_content,
            pre_execution_downloadables: dls(raw.pre_execution_downloadables),
        }),
        ClientMessageKind::ArtifactUploadResponse => ClientMessage::ArtifactUploadResponse {
            filename: raw.filename.ok_or_else(|| missing(name, "filename"))?,
            filepath: raw.filepath.ok_or_else(|| missing(name, "filepath"))?,
            upload: ArtifactUpload {
                presigned_url: raw
                    .presigned_url
                    .ok_or_else(|| missing(name, "presigned_url"))?,
                content_type: raw
                    .content_type
                    .ok_or_else(|| missing(name, "content_type"))?,
            },
        },
        ClientMessageKind::Cancel => ClientMessage::Cancel,
        ClientMessageKind::EndSession => ClientMessage::EndSession,
    };
    Ok(Decoded::Message(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// What serde_json writes for the frame: the hand-written encoder must match it byte for
    /// byte.
    fn by_serde(stream: &str, text: &str, command: &str) -> String {
        serde_json::to_string(&RuntimeFrame::CommandOutput {
            stream,
            text,
            command,
        })
        .unwrap()
    }

    #[test]
    fn command_output_is_encoded_as_serde_json_does() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        let long = "0123456789abcdef\n\"é€😀\u{1}".repeat(500);
        for text in [
            "",
            "plain",
            "\"quoted\" \\ back\\slash",
            "\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}",
            "é€😀 \u{2028}\u{2029} </script>",
            &every_ascii,
            &long,
        ] {
            for stream in ["stdout", "stderr"] {
                assert_eq!(
                    encode_command_output(stream, text, "make \"all\"\n"),
                    by_serde(stream, text, "make \"all\"\n"),
                    "{text:?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        // ASCII half of the time (controls, quotes and backslashes included, which
        // `any::<String>()` leaves out), any char otherwise.
        fn command_output_encoding_matches_serde_json(
            text in proptest::collection::vec(
                prop_oneof![(0u8..0x80).prop_map(char::from), any::<char>()], 0..300
            ).prop_map(String::from_iter),
            command in proptest::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter),
        ) {
            prop_assert_eq!(
                encode_command_output("stdout", &text, &command),
                by_serde("stdout", &text, &command)
            );
        }
    }

    #[test]
    fn command_output_borrows_plain_text() {
        let frame = br#"{"message_type":"command_output_message","stream":"stdout","text":"hello","command":"echo hello"}"#;
        match decode_runtime(Frame::Bytes(frame), MAX).unwrap() {
            Decoded::Message(RuntimeMessage::CommandOutput {
                stream,
                text,
                command,
            }) => {
                assert!(matches!(text, Cow::Borrowed("hello")));
                assert!(matches!(command, Cow::Borrowed("echo hello")));
                assert_eq!(stream, "stdout");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn command_output_with_escapes_is_owned_and_unescaped() {
        let frame = br#"{"message_type":"command_output_message","stream":"stdout","text":"a\nb","command":"x"}"#;
        let Decoded::Message(RuntimeMessage::CommandOutput { text, .. }) =
            decode_runtime(Frame::Bytes(frame), MAX).unwrap()
        else {
            panic!("not command output")
        };
        assert!(matches!(text, Cow::Owned(_)));
        assert_eq!(text, "a\nb");
    }

    #[test]
    fn null_equals_absent_and_unknown_fields_are_ignored() {
        let frame = br#"{"message_type":"error_message","error":"x","metadata":null,"extra":[1,2,{"y":3}]}"#;
        let Decoded::Message(RuntimeMessage::Error { metadata, .. }) =
            decode_runtime(Frame::Bytes(frame), MAX).unwrap()
        else {
            panic!("not an error")
        };
        assert_eq!(metadata, Value::Null);
    }

    #[test]
    fn unknown_type_is_reported_not_fatal() {
        let frame = br#"{"message_type":"frobnicate_message","x":1}"#;
        assert!(matches!(
            decode_runtime(Frame::Bytes(frame), MAX).unwrap(),
            Decoded::Unknown(t) if t == "frobnicate_message"
        ));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"this is not json {", "object"),
            (b"{\"message_type\": 5}", "json"),
            (b"{not json", "json"),
            (b"[1,2]", "object"),
            (b"{\"hello\":1}", "message_type"),
            (
                b"{\"message_type\":\"result_message\",\"metadata\":{}}",
                "data",
            ),
            (
                b"{\"message_type\":\"result_message\",\"data\":{\"type\":\"image\"}}",
                "json",
            ),
            (b"{\"message_type\":\"error_message\"}", "error"),
            (b"\xff\xfe", "utf-8"),
        ];
        for (frame, what) in cases {
            let err = decode_runtime(Frame::Bytes(frame), MAX).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(what) || matches!(err, DecodeError::Json(_)) && *what == "json",
                "{what}: {text}"
            );
        }
    }

    #[test]
    fn size_limit_is_checked_before_parsing() {
        let err = decode_runtime(Frame::Bytes(&[b' '; 100]), 10).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::TooLarge {
                size: 100,
                limit: 10
            }
        ));
    }

    #[test]
    fn nesting_limit_is_enforced() {
        let mut frame = String::from("{\"message_type\":\"result_message\",\"data\":");
        frame.push_str(&"[".repeat(10_000));
        assert!(matches!(
            decode_runtime(Frame::Text(&frame), MAX),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn runtime_frames_round_trip() {
        let meta = serde_json::json!({"k": "v"});
        let data = WireResultData::StructuredOutput {
            structured_output: serde_json::json!({"answer": 42}),
        };
        let frame = RuntimeFrame::Result {
            metadata: &meta,
            data: &data,
        }
        .encode();
        assert!(frame.starts_with("{\"message_type\":\"result_message\""));
        let Decoded::Message(RuntimeMessage::Result {
            data: back,
            metadata,
        }) = decode_runtime(Frame::Text(&frame), MAX).unwrap()
        else {
            panic!("not a result")
        };
        assert_eq!(back, data);
        assert_eq!(metadata, meta);
    }

    #[test]
    fn client_frames_round_trip() {
        let inv = Invocation {
            user_prompt: "hi".into(),
            system_prompt: "sys".into(),
            model: "m".into(),
            artifacts_dirs: vec!["/a".into()],
            pre_agent_invocation_commands: Some(vec![Command::new("ls").cwd("/tmp")]),
            ..Invocation::default()
        };
        let frame = encode_invocation(&inv, false);
        let Decoded::Message(ClientMessage::Invocation(back)) =
            decode_client(Frame::Text(&frame), MAX).unwrap()
        else {
            panic!("not an invocation")
        };
        assert_eq!(back, inv);
        let legacy = encode_invocation(&inv, true);
        assert!(legacy.contains("\"artifacts_dir\":\"/a\""));
        assert!(!frame.contains("\"artifacts_dir\":"));
    }
}
