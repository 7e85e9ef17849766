//! What the application asks of the runtime: queries, command batches, artifact answers.

use std::collections::BTreeMap;
use std::time::Duration;

/// A query for the agent: the fields of an `invocation_message`.
///
/// Build one with [`Invocation::new`] and the chaining setters; the fields are public to read
/// and to change. `None` and an empty `artifacts_dirs` go out as `null`, as the Python client
/// sends them.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The user prompt.
    pub user_prompt: String,
    /// The system prompt.
    pub system_prompt: String,
    /// The model identifier passed to the runtime.
    pub model: String,
    /// A JSON Schema (as a string) for structured output; the result is then
    /// [`ResultData::StructuredOutput`](crate::ResultData::StructuredOutput).
    pub output_format_json_schema: Option<String>,
    /// A caller-defined identifier for tracing.
    pub source_id: Option<String>,
    /// Environment variables for the agent.
    pub agent_env: Option<BTreeMap<String, String>>,
    /// Strings the runtime replaces with `[REDACTED]` in everything it sends.
    pub secrets_to_redact: Vec<String>,
    /// Directories the runtime watches for artifacts to upload; empty means none.
    pub artifacts_dirs: Vec<String>,
    /// Ignore rules for the artifact watcher, in gitignore syntax.
    pub artifacts_ignore_content: Option<String>,
    /// Commands run before the agent starts.
    pub pre_agent_invocation_commands: Option<Vec<Command>>,
    /// Commands run after the agent finishes.
    pub post_agent_invocation_commands: Option<Vec<Command>>,
    /// Files downloaded into the runtime before the agent starts.
    pub pre_agent_downloadables: Option<Vec<Downloadable>>,
    /// Why the schema given to `output_schema` was refused.
    pub(crate) output_schema_error: Option<String>,
}

/// What [`Invocation::output_schema`] (and the clients' `QueryOptions::output_schema`)
/// accept: a JSON Schema as a [`serde_json::Value`] (owned or borrowed) or as JSON text
/// (`&str` or `String`). Sealed.
///
/// A string is always read as JSON text, never sent as a JSON string:
///
/// ```
/// # use runtimeuse_proto::Invocation;
/// use serde_json::{Value, json};
///
/// let invocation = Invocation::new("hi", "gpt-4o").output_schema(r#"{"type": "object"}"#);
/// let sent: Value = serde_json::from_str(invocation.output_format_json_schema.as_deref().unwrap())?;
/// assert_eq!(sent, json!({"type": "json_schema", "schema": {"type": "object"}}));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// `.into()` does not pick a type for it, so the old trap of a schema sent as a JSON string
/// does not compile:
///
/// ```compile_fail,E0283
/// # use runtimeuse_proto::Invocation;
/// let invocation = Invocation::new("hi", "gpt-4o").output_schema(r#"{"type": "object"}"#.into());
/// ```
///
/// A string converted into a `Value` first is a JSON *string*, not a schema, and is refused
/// when the request starts:
///
/// ```
/// # use runtimeuse_proto::{Invocation, UsageError};
/// let schema = serde_json::Value::from(r#"{"type": "object"}"#);
/// let invocation = Invocation::new("hi", "gpt-4o").output_schema(schema);
/// assert!(matches!(invocation.check(), Err(UsageError::InvalidOutputSchema(_))));
/// ```
pub trait IntoSchema: sealed::Sealed {
    /// The schema as a JSON value, or why it is not one.
    #[doc(hidden)]
    fn into_schema(self) -> Result<serde_json::Value, String>;
}

mod sealed {
    /// The types [`IntoSchema`](super::IntoSchema) is implemented for: a seal, not for naming.
    #[allow(unnameable_types)]
    pub trait Sealed {}
    impl Sealed for serde_json::Value {}
    impl Sealed for &serde_json::Value {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
}

impl IntoSchema for serde_json::Value {
    fn into_schema(self) -> Result<serde_json::Value, String> {
        Ok(self)
    }
}

impl IntoSchema for &serde_json::Value {
    fn into_schema(self) -> Result<serde_json::Value, String> {
        Ok(self.clone())
    }
}

impl IntoSchema for &str {
    fn into_schema(self) -> Result<serde_json::Value, String> {
        serde_json::from_str(self).map_err(|e| format!("the schema text is not JSON: {e}"))
    }
}

impl IntoSchema for String {
    fn into_schema(self) -> Result<serde_json::Value, String> {
        self.as_str().into_schema()
    }
}

impl IntoSchema for &String {
    fn into_schema(self) -> Result<serde_json::Value, String> {
        self.as_str().into_schema()
    }
}

/// The format text sent for `schema`: the schema in the `json_schema` wrapper, or the schema
/// as it is when it is that wrapper already.
fn schema_format(schema: serde_json::Value) -> Result<String, String> {
    let serde_json::Value::Object(object) = &schema else {
        let what = match &schema {
            serde_json::Value::String(_) => "a JSON string",
            serde_json::Value::Array(_) => "a JSON array",
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "a number",
        };
        return Err(format!(
            "a JSON Schema must be a JSON object, not {what} (to send a format text \
             verbatim, use output_format)"
        ));
    };
    let wrapped = object.get("type").and_then(serde_json::Value::as_str) == Some("json_schema");
    if wrapped {
        return match object.get("schema") {
            Some(serde_json::Value::Object(_)) => Ok(schema.to_string()),
            _ => Err("a json_schema wrapper needs a \"schema\" object".into()),
        };
    }
    Ok(serde_json::json!({ "type": "json_schema", "schema": schema }).to_string())
}

impl Invocation {
    /// A query with the given user prompt and model, and an empty system prompt.
    pub fn new(user_prompt: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            user_prompt: user_prompt.into(),
            model: model.into(),
            ..Self::default()
        }
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = prompt.into();
        self
    }

    /// Asks for structured output whose answer follows `schema`, a JSON Schema given as a
    /// [`serde_json::Value`] or as JSON text (see [`IntoSchema`]). Sends
    /// `{"type": "json_schema", "schema": <schema>}`, the format runtimes read (the upstream
    /// agents take `schema` from it; the Python client sends it so).
    ///
    /// A schema that is already in that wrapper is sent as it is, not wrapped twice. A schema
    /// that is not a JSON object (or text that is not JSON) makes the request fail with
    /// [`UsageError::InvalidOutputSchema`](crate::UsageError::InvalidOutputSchema) when it is
    /// started, before anything is sent. To send a format text verbatim (another wrapper than
    /// this one), use [`output_format`](Self::output_format).
    ///
    /// ```
    /// use runtimeuse_proto::Invocation;
    /// use serde_json::json;
    ///
    /// let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
    /// let a = Invocation::new("2 + 2?", "gpt-4o").output_schema(&schema);
    /// let b = Invocation::new("2 + 2?", "gpt-4o").output_schema(schema.to_string());
    /// let c = Invocation::new("2 + 2?", "gpt-4o")
    ///     .output_schema(json!({"type": "json_schema", "schema": schema}));
    /// assert_eq!(a, b);
    /// assert_eq!(a, c);
    /// ```
    #[must_use]
    pub fn output_schema(mut self, schema: impl IntoSchema) -> Self {
        match schema.into_schema().and_then(schema_format) {
            Ok(format) => {
                self.output_format_json_schema = Some(format);
                self.output_schema_error = None;
            }
            Err(reason) => {
                self.output_format_json_schema = None;
                self.output_schema_error = Some(reason);
            }
        }
        self
    }

    /// Sets `output_format_json_schema_str` to exactly this text (the whole format, wrapper
    /// included), for runtimes that expect something else than
    /// [`output_schema`](Self::output_schema) sends. Nothing is checked.
    #[must_use]
    pub fn output_format(mut self, raw: impl Into<String>) -> Self {
        self.output_format_json_schema = Some(raw.into());
        self.output_schema_error = None;
        self
    }

    /// Why the schema given to [`output_schema`](Self::output_schema) was refused, if it was:
    /// starting the request then fails with this.
    pub fn check(&self) -> Result<(), crate::UsageError> {
        match &self.output_schema_error {
            Some(reason) => Err(crate::UsageError::InvalidOutputSchema(reason.clone())),
            None => Ok(()),
        }
    }

    /// Sets the source id.
    #[must_use]
    pub fn source_id(mut self, id: impl Into<String>) -> Self {
        self.source_id = Some(id.into());
        self
    }

    /// Adds an environment variable for the agent.
    #[must_use]
    pub fn agent_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.agent_env
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Adds a secret to redact.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets_to_redact.push(secret.into());
        self
    }

    /// Adds an artifacts directory.
    #[must_use]
    pub fn artifacts_dir(mut self, dir: impl Into<String>) -> Self {
        self.artifacts_dirs.push(dir.into());
        self
    }

    /// Sets the artifact ignore rules (gitignore syntax).
    #[must_use]
    pub fn artifacts_ignore(mut self, content: impl Into<String>) -> Self {
        self.artifacts_ignore_content = Some(content.into());
        self
    }

    /// Adds a command to run before the agent.
    #[must_use]
    pub fn pre_command(mut self, command: impl Into<Command>) -> Self {
        self.pre_agent_invocation_commands
            .get_or_insert_with(Vec::new)
            .push(command.into());
        self
    }

    /// Adds a command to run after the agent.
    #[must_use]
    pub fn post_command(mut self, command: impl Into<Command>) -> Self {
        self.post_agent_invocation_commands
            .get_or_insert_with(Vec::new)
            .push(command.into());
        self
    }

    /// Adds a file to download before the agent starts.
    #[must_use]
    pub fn download(mut self, downloadable: Downloadable) -> Self {
        self.pre_agent_downloadables
            .get_or_insert_with(Vec::new)
            .push(downloadable);
        self
    }
}

/// A batch of shell commands: the fields of a `command_execution_message`.
///
/// The runtime runs them in order and stops at the first that fails.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandBatch {
    /// The commands, in order. Must not be empty.
    pub commands: Vec<Command>,
    /// A caller-defined identifier for tracing.
    pub source_id: Option<String>,
    /// Strings the runtime replaces with `[REDACTED]` in everything it sends.
    pub secrets_to_redact: Vec<String>,
    /// Directories the runtime watches for artifacts to upload; empty means none.
    pub artifacts_dirs: Vec<String>,
    /// Ignore rules for the artifact watcher, in gitignore syntax.
    pub artifacts_ignore_content: Option<String>,
    /// Files downloaded into the runtime before the commands run.
    pub pre_execution_downloadables: Option<Vec<Downloadable>>,
}

impl CommandBatch {
    /// A batch of these commands.
    pub fn new<I, C>(commands: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<Command>,
    {
        Self {
            commands: commands.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets the source id.
    #[must_use]
    pub fn source_id(mut self, id: impl Into<String>) -> Self {
        self.source_id = Some(id.into());
        self
    }

    /// Adds a secret to redact.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets_to_redact.push(secret.into());
        self
    }

    /// Adds an artifacts directory.
    #[must_use]
    pub fn artifacts_dir(mut self, dir: impl Into<String>) -> Self {
        self.artifacts_dirs.push(dir.into());
        self
    }

    /// Sets the artifact ignore rules (gitignore syntax).
    #[must_use]
    pub fn artifacts_ignore(mut self, content: impl Into<String>) -> Self {
        self.artifacts_ignore_content = Some(content.into());
        self
    }

    /// Adds a file to download before the commands run.
    #[must_use]
    pub fn download(mut self, downloadable: Downloadable) -> Self {
        self.pre_execution_downloadables
            .get_or_insert_with(Vec::new)
            .push(downloadable);
        self
    }
}

/// One shell command, with an optional working directory and extra environment.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// The command line, run through a shell.
    pub command: String,
    /// The working directory (created by the runtime when missing).
    pub cwd: Option<String>,
    /// Environment variables merged over the runtime's own.
    pub env: Option<BTreeMap<String, String>>,
}

impl Command {
    /// A command with no `cwd` and no extra environment.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            ..Self::default()
        }
    }

    /// Sets the working directory.
    #[must_use]
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }
}

impl From<&str> for Command {
    fn from(command: &str) -> Self {
        Self::new(command)
    }
}

impl From<String> for Command {
    fn from(command: String) -> Self {
        Self::new(command)
    }
}

/// A file the runtime downloads (HTTP GET) into a working directory before a request runs.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Downloadable {
    /// The URL to fetch.
    pub download_url: String,
    /// The directory to put it in (created when missing).
    pub working_dir: String,
}

impl Downloadable {
    /// A download of `url` into `working_dir`.
    pub fn new(url: impl Into<String>, working_dir: impl Into<String>) -> Self {
        Self {
            download_url: url.into(),
            working_dir: working_dir.into(),
        }
    }
}

/// The application's answer to an artifact upload request: where the runtime should PUT the file.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactUpload {
    /// A presigned URL accepting an HTTP PUT of the file.
    pub presigned_url: String,
    /// The `Content-Type` of the PUT.
    pub content_type: String,
}

impl ArtifactUpload {
    /// An answer with this URL and content type.
    pub fn new(presigned_url: impl Into<String>, content_type: impl Into<String>) -> Self {
        Self {
            presigned_url: presigned_url.into(),
            content_type: content_type.into(),
        }
    }
}

/// Per-request settings that do not go on the wire.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Fail the request if its terminal has not arrived this long after it started.
    pub timeout: Option<Duration>,
    /// Fail the request if no message at all arrives for this long (heartbeats count).
    /// `None`: the session's [`Config::request_idle_timeout`](crate::Config) (60 s by
    /// default); `Duration::MAX`: no idle limit.
    pub idle_timeout: Option<Duration>,
    /// Whether the application will answer artifact upload requests. Must be `true` exactly when
    /// the request names artifacts directories.
    pub artifact_uploader: bool,
}

impl RequestOptions {
    /// Sets the overall timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Declares that the application answers artifact upload requests.
    #[must_use]
    pub fn artifact_uploader(mut self, present: bool) -> Self {
        self.artifact_uploader = present;
        self
    }
}
