//! The runtime side: [`RuntimeSession`], the protocol state machine of an agent runtime.
//!
//! The mirror image of [`Session`](crate::Session): it decodes the client's frames into
//! [`RuntimeEvent`]s, and turns the runtime's calls (assistant text, command output, artifact
//! requests, one terminal per request) into frames, with `secrets_to_redact` applied to every
//! outgoing string.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::error::UsageError;
use crate::event::{CommandExecutionResult, OutputStream, QueryResult, RequestId, ResultData};
use crate::request::{ArtifactUpload, CommandBatch, Invocation};
use crate::session::{Input, Transmit};
use crate::wire::{
    self, ClientMessage, DecodeError, Decoded, Frame, RuntimeFrame, WireCommandResultItem,
    WireResultData,
};

/// What replaces a secret in everything the runtime sends.
pub const REDACTED: &str = "[REDACTED]";

/// The error text the upstream runtime sends for a request that arrives while one is in flight.
pub const BUSY_ERROR: &str = "Received request while another is in flight!";

/// The error text of the terminal `error_message` of a cancelled request, as upstream.
pub const CANCELLED_ERROR: &str = "Request cancelled";

/// Settings of a [`RuntimeSession`].
///
/// `#[non_exhaustive]`: start from [`RuntimeConfig::default`] and change fields.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Largest frame accepted from the client, in bytes. Default 64 MiB.
    pub max_frame_size: usize,
    /// Interval of `heartbeat_message`s while a request runs; `None` disables them.
    /// Default 15 s, as upstream.
    pub heartbeat_interval: Option<Duration>,
    /// Most artifact upload requests awaiting the client's answer. Default 1024.
    pub max_pending_artifact_requests: usize,
    /// Secrets of the runtime itself (its token, a provider key), replaced by [`REDACTED`]
    /// in every string sent, as each request's `secrets_to_redact` are. Empty ones are
    /// ignored. Default none. `Debug` shows only how many there are.
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("max_frame_size", &self.max_frame_size)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field(
                "max_pending_artifact_requests",
                &self.max_pending_artifact_requests,
            )
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .finish()
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 64 << 20,
            heartbeat_interval: Some(Duration::from_secs(15)),
            max_pending_artifact_requests: 1024,
            secrets: Vec::new(),
        }
    }
}

/// What the client asked of the runtime. Polled with [`RuntimeSession::poll_output`].
#[non_exhaustive]
#[derive(Debug)]
pub enum RuntimeEvent {
    /// Run this query; end it with [`RuntimeSession::finish_query`] or
    /// [`RuntimeSession::fail`].
    Invocation {
        /// The request.
        request: RequestId,
        /// The query.
        invocation: Invocation,
    },
    /// Run these commands; end with [`RuntimeSession::finish_commands`] or
    /// [`RuntimeSession::fail`].
    Commands {
        /// The request.
        request: RequestId,
        /// The commands.
        batch: CommandBatch,
    },
    /// The client cancelled the request in flight. Stop it and end it, usually with
    /// [`RuntimeSession::fail`] and [`CANCELLED_ERROR`].
    Cancel {
        /// The request.
        request: RequestId,
    },
    /// The client answered an artifact upload request: PUT the file there.
    ArtifactUploadResponse {
        /// The file's name.
        filename: String,
        /// The file's path.
        filepath: String,
        /// Where and how to upload it.
        upload: ArtifactUpload,
    },
    /// The client asked to end the session, and no request is in flight. Finish pending work
    /// (e.g. report last artifacts), then call [`RuntimeSession::confirm_end_session`].
    EndSession,
    /// The connection closed. Stop any work of the request in flight.
    Closed,
}

/// Output of a [`RuntimeSession`].
// An invocation is large, but arrives once per request: not worth a box on the way out.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RuntimeOutput {
    /// Send this to the client.
    Transmit(Transmit),
    /// Tell the runtime.
    Event(RuntimeEvent),
    /// Nothing more to do now: feed [`Input::Timeout`] at this instant.
    Timeout(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Query,
    Commands,
}

#[derive(Debug)]
struct InFlight {
    id: RequestId,
    kind: Kind,
    started: Instant,
    next_heartbeat: Option<Instant>,
    /// Per stream (stdout, stderr): the command and the tail held back because it may be the
    /// start of a secret split across chunks.
    held: [Option<(String, String)>; 2],
}

/// The runtime side of one connection: the sans-IO state machine an agent runtime drives.
///
/// Same run loop as [`Session`](crate::Session): feed [`Input`]s and calls, then drain
/// [`poll_output`](Self::poll_output) to [`RuntimeOutput::Timeout`].
///
/// - A malformed frame (not JSON, not an object, no string `message_type`, a known message
///   with missing or mistyped fields) gets an `error_message` reply; the connection stays open.
///   An unknown `message_type` is logged and ignored.
/// - A request that arrives while one is in flight gets an `error_message` ([`BUSY_ERROR`]);
///   the first continues. A `cancel_message` with nothing in flight and an unsolicited artifact
///   response are ignored.
/// - Exactly one terminal per request: [`finish_query`](Self::finish_query),
///   [`finish_commands`](Self::finish_commands) or [`fail`](Self::fail).
/// - The request's `secrets_to_redact` (and those of earlier requests on the connection) are
///   replaced by [`REDACTED`] in every outgoing string. Command output that ends with the
///   start of a secret holds that tail back until the next chunk of the stream or the end of
///   the request, so that a secret split across two chunks is redacted too.
#[derive(Debug)]
pub struct RuntimeSession {
    config: RuntimeConfig,
    next_request: u64,
    in_flight: Option<InFlight>,
    /// Every secret seen on this connection, longest first.
    secrets: Redactor,
    pending_artifacts: HashSet<(String, String)>,
    end_requested: bool,
    end_reported: bool,
    finished: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RuntimeEvent>,
    last_now: Instant,
}

impl RuntimeSession {
    /// A new session on a freshly accepted connection.
    pub fn new(config: RuntimeConfig, now: Instant) -> Self {
        let mut secrets = Redactor::default();
        secrets.add(&config.secrets);
        Self {
            config,
            next_request: 0,
            in_flight: None,
            secrets,
            pending_artifacts: HashSet::new(),
            end_requested: false,
            end_reported: false,
            finished: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_now: now,
        }
    }

    // ----- getters -----

    /// The request in flight, if any.
    pub fn request_in_flight(&self) -> Option<RequestId> {
        self.in_flight.as_ref().map(|r| r.id)
    }

    /// `s` with every secret the connection's requests listed in `secrets_to_redact`
    /// replaced, as the session does to every string it sends. For the runtime's own logs of
    /// client-provided text (paths, names, URLs), which must not quote a secret either.
    pub fn redact<'s>(&self, s: &'s str) -> Cow<'s, str> {
        self.secrets.redact(s)
    }

    /// The secrets known now, to [`redact`](Redactor::redact) text away from the session (a
    /// task's log lines, say).
    pub fn redactor(&self) -> Redactor {
        self.secrets.clone()
    }

    /// Whether the session finished (end of session confirmed, or the connection closed).
    /// Close the connection once the transmits are drained.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the client asked to end the session.
    pub fn is_ending(&self) -> bool {
        self.end_requested
    }

    // ----- handle_* -----

    /// Feeds one input. Drain [`poll_output`](Self::poll_output) afterwards.
    pub fn handle_input(&mut self, input: Input<'_>) {
        if self.finished {
            return;
        }
        match input {
            Input::Receive(now, bytes) => {
                self.last_now = now;
                self.handle_timeout(now);
                self.handle_frame(now, Frame::Bytes(bytes));
            }
            Input::ReceiveText(now, text) => {
                self.last_now = now;
                self.handle_timeout(now);
                self.handle_frame(now, Frame::Text(text));
            }
            Input::Pong(now) | Input::Timeout(now) => {
                self.last_now = now;
                self.handle_timeout(now);
            }
            Input::TransportClosed(now) => {
                self.last_now = now;
                self.finished = true;
                self.in_flight = None;
                self.events.push_back(RuntimeEvent::Closed);
            }
        }
    }

    // ----- commands: progress of the request in flight -----

    /// Sends an `assistant_message`.
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`], [`UsageError::SessionFinished`].
    pub fn send_assistant(&mut self, text_blocks: &[String]) -> Result<(), UsageError> {
        self.check_in_flight()?;
        let blocks: Vec<String> = text_blocks
            .iter()
            .map(|b| self.redact(b).into_owned())
            .collect();
        self.push(RuntimeFrame::Assistant {
            text_blocks: &blocks,
        });
        Ok(())
    }

    /// Sends a chunk of a command's output as `command_output_message`, holding back a tail
    /// that may be the start of a secret.
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`], [`UsageError::SessionFinished`].
    pub fn send_command_output(
        &mut self,
        stream: OutputStream,
        command: &str,
        text: &str,
    ) -> Result<(), UsageError> {
        self.check_in_flight()?;
        let slot = stream_slot(stream);
        let held = self.in_flight.as_mut().and_then(|r| r.held[slot].take());
        // The held tail and the new text, joined only when there is a tail (no copy otherwise).
        let joined;
        let whole = match held {
            Some((held_command, mut tail)) if held_command == command => {
                tail.push_str(text);
                joined = tail;
                joined.as_str()
            }
            Some((held_command, tail)) => {
                self.emit_output(stream, &held_command, &tail);
                text
            }
            None => text,
        };
        let redacted = self.redact(whole);
        let hold_from = self.secret_prefix_start(&redacted);
        let (emit, hold) = redacted.split_at(hold_from);
        if !emit.is_empty() {
            self.emit_output(stream, command, emit);
        }
        if !hold.is_empty() {
            let hold = hold.to_owned();
            if let Some(r) = self.in_flight.as_mut() {
                r.held[slot] = Some((command.to_owned(), hold));
            }
        }
        Ok(())
    }

    /// Sends the output held back for `stream` (the command's output ended).
    pub fn flush_command_output(&mut self, stream: OutputStream) {
        let held = self
            .in_flight
            .as_mut()
            .and_then(|r| r.held[stream_slot(stream)].take());
        if let Some((command, tail)) = held {
            self.emit_output(stream, &command, &tail);
        }
    }

    /// Sends a non-terminal `error_message` (the request goes on).
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`], [`UsageError::SessionFinished`].
    pub fn send_error(&mut self, error: &str, metadata: &Value) -> Result<(), UsageError> {
        self.check_in_flight()?;
        self.push_error(error, metadata);
        Ok(())
    }

    /// Asks the client where to upload a file (`artifact_upload_request_message`). Allowed
    /// during a request, between requests and while the session ends.
    ///
    /// # Errors
    ///
    /// [`UsageError::SessionFinished`].
    pub fn request_artifact_upload(
        &mut self,
        filename: &str,
        filepath: &str,
    ) -> Result<(), UsageError> {
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.pending_artifacts.len() >= self.config.max_pending_artifact_requests {
            tracing::warn!("too many unanswered artifact upload requests; not asking");
            return Ok(());
        }
        let (filename, filepath) = (self.redact(filename), self.redact(filepath));
        self.pending_artifacts
            .insert((filename.to_string(), filepath.to_string()));
        self.push(RuntimeFrame::ArtifactUploadRequest {
            filename: &filename,
            filepath: &filepath,
        });
        Ok(())
    }

    // ----- commands: terminals -----

    /// Ends the query in flight with a result (`result_message`).
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`] (also for a command batch in flight),
    /// [`UsageError::SessionFinished`].
    pub fn finish_query(&mut self, result: &QueryResult) -> Result<(), UsageError> {
        self.check_kind(Kind::Query)?;
        self.end_request();
        let data = match &result.data {
            ResultData::Text(text) => WireResultData::Text {
                text: self.redact(text).into_owned(),
            },
            ResultData::StructuredOutput(v) => WireResultData::StructuredOutput {
                structured_output: self.redact_value(v),
            },
        };
        let metadata = match &result.metadata {
            Value::Null => Value::Object(Map::new()),
            m => self.redact_value(m),
        };
        self.push(RuntimeFrame::Result {
            metadata: &metadata,
            data: &data,
        });
        self.after_terminal();
        Ok(())
    }

    /// Ends the command batch in flight (`command_execution_result_message`).
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`] (also for a query in flight),
    /// [`UsageError::SessionFinished`].
    pub fn finish_commands(&mut self, result: &CommandExecutionResult) -> Result<(), UsageError> {
        self.check_kind(Kind::Commands)?;
        self.end_request();
        let results: Vec<WireCommandResultItem> = result
            .results
            .iter()
            .map(|r| WireCommandResultItem {
                command: self.redact(&r.command).into_owned(),
                exit_code: r.exit_code,
                stdout: r.stdout.as_deref().map(|s| self.redact(s).into_owned()),
            })
            .collect();
        self.push(RuntimeFrame::CommandExecutionResult { results: &results });
        self.after_terminal();
        Ok(())
    }

    /// Ends the request in flight with a terminal `error_message`.
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`], [`UsageError::SessionFinished`].
    pub fn fail(&mut self, error: &str, metadata: &Value) -> Result<(), UsageError> {
        self.check_in_flight()?;
        self.end_request();
        self.push_error(error, metadata);
        self.after_terminal();
        Ok(())
    }

    /// Confirms the end of the session (`end_session_confirm_message`) after
    /// [`RuntimeEvent::EndSession`]; the session then finishes.
    ///
    /// # Errors
    ///
    /// [`UsageError::SessionFinished`]; [`UsageError::RequestInFlight`] if the client did not
    /// ask to end the session or a request is in flight.
    pub fn confirm_end_session(&mut self) -> Result<(), UsageError> {
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if !self.end_requested || self.in_flight.is_some() {
            return Err(UsageError::RequestInFlight);
        }
        self.push(RuntimeFrame::EndSessionConfirm);
        self.finished = true;
        Ok(())
    }

    // ----- poll_* -----

    /// The next output. Call until it returns [`RuntimeOutput::Timeout`].
    #[must_use]
    pub fn poll_output(&mut self) -> RuntimeOutput {
        if let Some(t) = self.transmits.pop_front() {
            return RuntimeOutput::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return RuntimeOutput::Event(e);
        }
        RuntimeOutput::Timeout(self.poll_timeout())
    }

    /// When the session next wants [`Input::Timeout`] (the next heartbeat); an hour after the
    /// last input when nothing is scheduled.
    pub fn poll_timeout(&self) -> Instant {
        self.in_flight
            .as_ref()
            .and_then(|r| r.next_heartbeat)
            .filter(|_| !self.finished)
            .or_else(|| self.last_now.checked_add(Duration::from_secs(3600)))
            .unwrap_or(self.last_now)
    }

    // ----- internals -----

    fn check_in_flight(&self) -> Result<(), UsageError> {
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.in_flight.is_none() {
            return Err(UsageError::NoRequestInFlight);
        }
        Ok(())
    }

    fn check_kind(&self, kind: Kind) -> Result<(), UsageError> {
        self.check_in_flight()?;
        match &self.in_flight {
            Some(r) if r.kind == kind => Ok(()),
            _ => Err(UsageError::NoRequestInFlight),
        }
    }

    /// Flushes held output and clears the request in flight.
    fn end_request(&mut self) {
        self.flush_command_output(OutputStream::Stdout);
        self.flush_command_output(OutputStream::Stderr);
        self.in_flight = None;
    }

    fn after_terminal(&mut self) {
        if self.end_requested && !self.end_reported {
            self.end_reported = true;
            self.events.push_back(RuntimeEvent::EndSession);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(interval) = self.config.heartbeat_interval else {
            return;
        };
        let Some(r) = self.in_flight.as_mut() else {
            return;
        };
        let Some(at) = r.next_heartbeat else { return };
        if now < at {
            return;
        }
        let elapsed = now.saturating_duration_since(r.started);
        // The next multiple of the interval after now (heartbeats missed while nobody polled
        // are not sent late in a burst).
        let mut next = at;
        while next <= now {
            match next.checked_add(interval) {
                Some(n) => next = n,
                None => break,
            }
        }
        r.next_heartbeat = (next > now).then_some(next);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.push(RuntimeFrame::Heartbeat {
            phase: "request_in_flight",
            elapsed_ms,
        });
    }

    /// A message of a type this runtime does not know: logged, shown only when it looks
    /// like a message type (it came from the client, and may be anything).
    fn unknown_type(&self, message_type: &str) {
        let looks_like_one = message_type.len() <= 64
            && message_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        let shown = if looks_like_one {
            message_type
        } else {
            "(not shown)"
        };
        tracing::warn!(
            message_type = %self.redact(shown),
            "ignoring client message of unknown type"
        );
    }

    /// A frame that is no valid client message: said to the client and logged, described
    /// without the frame's values (they may be secrets, registered or not).
    fn malformed(&mut self, err: &DecodeError, frame: Frame<'_>) {
        let text = match frame {
            Frame::Text(t) => t,
            // Only JSON errors quote the frame, and only a UTF-8 frame gets that far.
            Frame::Bytes(b) => std::str::from_utf8(b).unwrap_or_default(),
        };
        let text = self.redact(&wire::describe(err, text)).into_owned();
        tracing::warn!(error = %text, "malformed client frame");
        let name = match err {
            DecodeError::Json(_) | DecodeError::InvalidUtf8 | DecodeError::NotAnObject => {
                "SyntaxError"
            }
            _ => "ValidationError",
        };
        let metadata = serde_json::json!({ "error_name": name });
        self.push_error(&text, &metadata);
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        let message = match wire::decode_client(frame, self.config.max_frame_size) {
            Ok(Decoded::Message(m)) => m,
            Ok(Decoded::Unknown(t)) => return self.unknown_type(&t),
            Err(err) => return self.malformed(&err, frame),
        };
        match message {
            ClientMessage::Invocation(invocation) => {
                if let Some(request) = self.start(Kind::Query, &invocation.secrets_to_redact, now) {
                    self.events.push_back(RuntimeEvent::Invocation {
                        request,
                        invocation,
                    });
                }
            }
            ClientMessage::CommandExecution(batch) => {
                if let Some(request) = self.start(Kind::Commands, &batch.secrets_to_redact, now) {
                    self.events
                        .push_back(RuntimeEvent::Commands { request, batch });
                }
            }
            ClientMessage::Cancel => match &self.in_flight {
                Some(r) => {
                    let request = r.id;
                    self.events.push_back(RuntimeEvent::Cancel { request });
                }
                None => tracing::debug!("cancel with nothing in flight; ignored"),
            },
            ClientMessage::ArtifactUploadResponse {
                filename,
                filepath,
                upload,
            } => {
                if self
                    .pending_artifacts
                    .remove(&(filename.clone(), filepath.clone()))
                {
                    self.events.push_back(RuntimeEvent::ArtifactUploadResponse {
                        filename,
                        filepath,
                        upload,
                    });
                } else {
                    tracing::warn!(
                        filename = %self.redact(&filename),
                        "unsolicited artifact upload response; ignored"
                    );
                }
            }
            ClientMessage::EndSession => {
                if self.end_requested {
                    return;
                }
                self.end_requested = true;
                if self.in_flight.is_none() {
                    self.end_reported = true;
                    self.events.push_back(RuntimeEvent::EndSession);
                }
            }
        }
    }

    fn start(&mut self, kind: Kind, secrets: &[String], now: Instant) -> Option<RequestId> {
        if self.in_flight.is_some() || self.end_requested {
            tracing::warn!("request while another is in flight; refused");
            self.push_error(BUSY_ERROR, &Value::Object(Map::new()));
            return None;
        }
        self.secrets.add(secrets);
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.in_flight = Some(InFlight {
            id,
            kind,
            started: now,
            next_heartbeat: self
                .config
                .heartbeat_interval
                .and_then(|i| now.checked_add(i)),
            held: [None, None],
        });
        Some(id)
    }

    fn emit_output(&mut self, stream: OutputStream, command: &str, text: &str) {
        let command = self.redact(command);
        self.push(RuntimeFrame::CommandOutput {
            stream: stream.as_str(),
            text,
            command: &command,
        });
    }

    fn push_error(&mut self, error: &str, metadata: &Value) {
        let error = self.redact(error);
        let metadata = match metadata {
            Value::Null => Value::Object(Map::new()),
            m => self.redact_value(m),
        };
        self.push(RuntimeFrame::Error {
            error: &error,
            metadata: &metadata,
        });
    }

    fn push(&mut self, frame: RuntimeFrame<'_>) {
        if self.finished {
            return;
        }
        self.transmits.push_back(Transmit::Text(frame.encode()));
    }

    /// Redacts every string (keys included) of a JSON value, without recursion.
    fn redact_value(&self, v: &Value) -> Value {
        let mut v = v.clone();
        if self.secrets.list.is_empty() {
            return v;
        }
        let mut stack = vec![&mut v];
        while let Some(node) = stack.pop() {
            match node {
                Value::String(s) => {
                    if let Cow::Owned(r) = self.redact(s) {
                        *s = r;
                    }
                }
                Value::Array(a) => stack.extend(a.iter_mut()),
                Value::Object(o) => {
                    if o.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                        let old = std::mem::take(o);
                        *o = old
                            .into_iter()
                            .map(|(k, v)| (self.redact(&k).into_owned(), v))
                            .collect();
                    }
                    stack.extend(o.values_mut());
                }
                _ => {}
            }
        }
        v
    }

    /// Where the longest suffix of `s` that is a proper prefix of a secret starts (`s.len()`
    /// when there is none).
    fn secret_prefix_start(&self, s: &str) -> usize {
        let longest = self.secrets.list.first().map_or(0, String::len);
        let earliest = s.len().saturating_sub(longest.saturating_sub(1));
        (earliest..s.len())
            .filter(|&i| s.is_char_boundary(i))
            .find(|&i| {
                let tail = &s[i..];
                self.secrets
                    .list
                    .iter()
                    .any(|secret| secret.len() > tail.len() && secret.starts_with(tail))
            })
            .unwrap_or(s.len())
    }
}

fn stream_slot(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stderr => 1,
        _ => 0,
    }
}

/// Replaces secrets in text: those the requests of a connection listed in
/// `secrets_to_redact`, longest first, each by `[REDACTED]`. `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    list: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor([{} hidden])", self.list.len())
    }
}

impl Redactor {
    /// Adds the non-empty secrets of `more` not known yet, keeping the longest first.
    fn add(&mut self, more: &[String]) {
        for secret in more {
            if !secret.is_empty() && !self.list.contains(secret) {
                self.list.push(secret.clone());
            }
        }
        self.list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `s` with every secret replaced (borrowed when there was none in it).
    pub fn redact<'s>(&self, s: &'s str) -> Cow<'s, str> {
        let mut out = Cow::Borrowed(s);
        for secret in &self.list {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' epoch
mod tests {
    use super::*;

    fn session() -> (RuntimeSession, Instant) {
        let now = Instant::now();
        (RuntimeSession::new(RuntimeConfig::default(), now), now)
    }

    fn drain(s: &mut RuntimeSession) -> (Vec<Value>, Vec<RuntimeEvent>) {
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        loop {
            match s.poll_output() {
                RuntimeOutput::Transmit(Transmit::Text(t)) => {
                    sent.push(serde_json::from_str(&t).unwrap())
                }
                RuntimeOutput::Transmit(Transmit::Ping) => {}
                RuntimeOutput::Event(e) => events.push(e),
                RuntimeOutput::Timeout(_) => return (sent, events),
            }
        }
    }

    fn start_with_secret(s: &mut RuntimeSession, now: Instant, secret: &str) {
        let frame = format!(
            r#"{{"message_type":"command_execution_message","commands":[{{"command":"x"}}],"secrets_to_redact":["{secret}"]}}"#
        );
        s.handle_input(Input::Receive(now, frame.as_bytes()));
        drain(s);
    }

    fn texts(sent: &[Value]) -> String {
        sent.iter()
            .filter_map(|f| f["text"].as_str())
            .collect::<Vec<_>>()
            .concat()
    }

    #[test]
    fn a_malformed_request_is_described_without_its_values() {
        for (frame, field, expected) in [
            (
                r#"{"message_type":"invocation_message","user_prompt":"p","system_prompt":"","model":"m","agent_env":"OPENAI_API_KEY=sk-hidden","secrets_to_redact":["sk-hidden"]}"#,
                "agent_env",
                "expected a map",
            ),
            (
                r#"{"message_type":"command_execution_message","commands":"rm sk-hidden"}"#,
                "commands",
                "expected a sequence",
            ),
            (
                r#"{"message_type":"command_execution_message","commands":[],"secrets_to_redact":"sk-hidden"}"#,
                "secrets_to_redact",
                "expected a sequence",
            ),
        ] {
            let (mut s, now) = session();
            s.handle_input(Input::Receive(now, frame.as_bytes()));
            let (sent, _) = drain(&mut s);
            let error = sent
                .iter()
                .find(|f| f["message_type"] == "error_message")
                .unwrap_or_else(|| panic!("{frame}: {sent:?}"));
            let text = error["error"].as_str().unwrap();
            assert!(!text.contains("sk-hidden"), "{text}");
            assert!(text.contains(&format!("in field {field}")), "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(text.contains("wrong type (string)"), "{text}");
            assert!(text.contains("at line 1 column"), "{text}");
        }
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted() {
        let (mut s, now) = session();
        start_with_secret(&mut s, now, "hunter2");
        s.send_command_output(OutputStream::Stdout, "x", "aaa hun")
            .unwrap();
        let (first, _) = drain(&mut s);
        assert_eq!(
            texts(&first),
            "aaa ",
            "the possible start of a secret is held back"
        );
        s.send_command_output(OutputStream::Stdout, "x", "ter2 bbb hu")
            .unwrap();
        s.finish_commands(&CommandExecutionResult { results: vec![] })
            .unwrap();
        let (rest, _) = drain(&mut s);
        assert_eq!(texts(&rest), "[REDACTED] bbb hu");
        assert_eq!(
            rest.last().unwrap()["message_type"],
            "command_execution_result_message"
        );
    }

    #[test]
    fn held_back_output_is_flushed_when_the_command_changes() {
        let (mut s, now) = session();
        start_with_secret(&mut s, now, "secret");
        s.send_command_output(OutputStream::Stdout, "one", "a sec")
            .unwrap();
        s.send_command_output(OutputStream::Stdout, "two", "ret")
            .unwrap();
        let (sent, _) = drain(&mut s);
        let pairs: Vec<(&str, &str)> = sent
            .iter()
            .map(|f| (f["command"].as_str().unwrap(), f["text"].as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("one", "a "), ("one", "sec"), ("two", "ret")]);
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let (mut s, now) = session();
        start_with_secret(&mut s, now, "pw");
        s.send_error("bad pw", &serde_json::json!({"pw": ["x pw"]}))
            .unwrap();
        s.request_artifact_upload("pw.txt", "/a/pw.txt").unwrap();
        s.fail("pw", &Value::Null).unwrap();
        let (sent, _) = drain(&mut s);
        let all = serde_json::to_string(&sent).unwrap();
        assert!(!all.contains("pw\""), "{all}");
        assert!(!all.contains(" pw"), "{all}");
        assert_eq!(sent[2]["metadata"], serde_json::json!({}));
    }

    #[test]
    fn the_runtimes_own_secrets_are_redacted_from_the_first_frame_and_never_shown() {
        let now = Instant::now();
        let config = RuntimeConfig {
            secrets: vec!["tok-of-the-runtime".into(), String::new()],
            ..RuntimeConfig::default()
        };
        let mut s = RuntimeSession::new(config.clone(), now);
        let batch = br#"{"message_type":"command_execution_message","commands":[{"command":"x"}]}"#;
        s.handle_input(Input::Receive(now, batch));
        s.send_command_output(OutputStream::Stdout, "x", "a tok-of-the-runtime b")
            .unwrap();
        s.fail("tok-of-the-runtime", &Value::Null).unwrap();
        let (sent, _) = drain(&mut s);
        let all = serde_json::to_string(&sent).unwrap();
        assert!(!all.contains("tok-of"), "{all}");
        assert!(all.contains("a [REDACTED]"), "{all}");
        for shown in [format!("{config:?}"), format!("{s:?}")] {
            assert!(!shown.contains("tok-of"), "{shown}");
        }
    }

    #[test]
    fn one_terminal_per_request_and_busy_requests_are_refused() {
        let (mut s, now) = session();
        let inv = br#"{"message_type":"invocation_message","user_prompt":"hi"}"#;
        s.handle_input(Input::Receive(now, inv));
        s.handle_input(Input::Receive(now, inv));
        let (sent, events) = drain(&mut s);
        assert_eq!(sent[0]["error"], BUSY_ERROR);
        assert!(
            matches!(&events[..], [RuntimeEvent::Invocation { invocation, .. }] if invocation.user_prompt == "hi")
        );
        let result = QueryResult {
            data: ResultData::Text("ok".into()),
            metadata: Value::Null,
        };
        s.finish_query(&result).unwrap();
        assert_eq!(s.finish_query(&result), Err(UsageError::NoRequestInFlight));
        assert_eq!(
            s.finish_commands(&CommandExecutionResult { results: vec![] }),
            Err(UsageError::NoRequestInFlight)
        );
    }

    #[test]
    fn heartbeats_while_a_request_runs() {
        let (mut s, now) = session();
        s.handle_input(Input::Receive(
            now,
            br#"{"message_type":"invocation_message","user_prompt":"SLOW"}"#,
        ));
        drain(&mut s);
        assert_eq!(s.poll_timeout(), now + Duration::from_secs(15));
        s.handle_input(Input::Timeout(now + Duration::from_secs(15)));
        s.handle_input(Input::Timeout(now + Duration::from_secs(31)));
        let (sent, _) = drain(&mut s);
        let elapsed: Vec<u64> = sent
            .iter()
            .map(|f| f["elapsed_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(elapsed, [15_000, 31_000]);
        assert_eq!(sent[0]["phase"], "request_in_flight");
        assert_eq!(s.poll_timeout(), now + Duration::from_secs(45));
    }

    #[test]
    fn end_session_waits_for_the_request_in_flight() {
        let (mut s, now) = session();
        s.handle_input(Input::Receive(
            now,
            br#"{"message_type":"invocation_message","user_prompt":"x"}"#,
        ));
        s.handle_input(Input::Receive(
            now,
            br#"{"message_type":"end_session_message"}"#,
        ));
        let (_, events) = drain(&mut s);
        assert_eq!(events.len(), 1, "no EndSession while in flight");
        assert_eq!(s.confirm_end_session(), Err(UsageError::RequestInFlight));
        s.fail(CANCELLED_ERROR, &Value::Null).unwrap();
        let (_, events) = drain(&mut s);
        assert!(matches!(events[..], [RuntimeEvent::EndSession]));
        s.confirm_end_session().unwrap();
        let (sent, _) = drain(&mut s);
        assert_eq!(
            sent.last().unwrap()["message_type"],
            "end_session_confirm_message"
        );
        assert!(s.is_finished());
    }
}
