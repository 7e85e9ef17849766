//! One model turn over HTTP: the request each wire API makes, retries, server-sent events and
//! their bounds. The provider-neutral conversation and events it speaks are in `model`.

use crate::ops::Metrics;
use std::fmt;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::model::{
    Decoder, ModelApi, ModelEvent, Part, ProviderError, TurnRequest, Usage, WireApi,
};
use super::{AgentOptions, ProviderConfig, anthropic, openai};

/// Largest error body read from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Starts one model turn: POSTs the request, retrying what is worth retrying, and returns the
/// stream of its parts.
///
/// Dropping the returned stream (or this future) closes the HTTP connection.
pub(crate) async fn start(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    options: &AgentOptions,
    request: &TurnRequest<'_>,
    metrics: &Metrics,
) -> Result<TurnStream, ProviderError> {
    let wire = wire(provider.api);
    let name = provider.api.provider();
    let api = wire.api();
    let url = join(&provider.base_url, wire.path());
    let body = wire.body(request).to_string();
    let headers = headers(wire, provider.api_key.as_deref().unwrap_or_default());
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let sent = http
            .post(&url)
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        let (error, delay) = match sent {
            Ok(r) if r.status().is_success() => break r,
            Ok(r) => {
                let retry = should_retry(&r);
                let delay = retry_after(r.headers());
                let status = r.status().as_u16();
                metrics.provider_error(name, Some(status));
                let text = read_bounded(r).await;
                let mut error = error_from_body(api, status, &text);
                error.attempts = attempt;
                if !retry {
                    return Err(error);
                }
                (error, delay)
            }
            Err(e) => {
                metrics.provider_error(name, None);
                let mut error = ProviderError::stream(api, transport_message(&e, &url));
                error.attempts = attempt;
                (error, None)
            }
        };
        if attempt >= options.max_attempts.max(1) {
            return Err(error);
        }
        let delay = delay
            .unwrap_or_else(|| backoff(options.retry_base_delay, attempt))
            .min(options.max_retry_delay);
        tracing::info!(%error, ?delay, attempt, "provider request failed; retrying");
        metrics.provider_retry(name);
        tokio::time::sleep(delay).await;
    };
    let decoder = wire.decoder();
    let limit = options.max_response_bytes;
    let mut seen = 0usize;
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(StreamError::Http)?;
        seen += chunk.len();
        if seen > limit {
            Err(StreamError::TooLarge(limit))
        } else {
            Ok(chunk)
        }
    });
    Ok(TurnStream {
        api,
        events: Box::pin(bytes.eventsource()),
        decoder,
        pending: std::collections::VecDeque::new(),
        scratch: Vec::new(),
        usage: Usage::default(),
        done: false,
        idle: options.stream_idle_timeout,
    })
}

type Events = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<StreamError>,
                >,
            > + Send,
    >,
>;

/// The parts of one model turn as they complete.
pub(crate) struct TurnStream {
    api: ModelApi,
    events: Events,
    decoder: Box<dyn Decoder>,
    pending: std::collections::VecDeque<Part>,
    scratch: Vec<ModelEvent>,
    usage: Usage,
    done: bool,
    idle: Duration,
}

impl fmt::Debug for TurnStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnStream")
            .field("api", &self.api)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl TurnStream {
    /// The next completed part, or `None` once the turn is complete.
    ///
    /// # Errors
    ///
    /// When the provider reports a failure, breaks the format, goes silent for longer than
    /// the idle limit, or ends the stream before the turn is complete.
    pub(crate) async fn next(&mut self) -> Result<Option<Part>, ProviderError> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            if self.done {
                return Ok(None);
            }
            let api = self.api;
            let next = tokio::time::timeout(self.idle, self.events.next()).await;
            match next {
                Err(_) => {
                    return Err(ProviderError::stream(
                        api,
                        format!("the stream sent nothing for {} s", self.idle.as_secs_f64()),
                    ));
                }
                Ok(None) => {
                    self.decoder.finish(&mut self.scratch)?;
                    if !self.scratch.contains(&ModelEvent::Done) {
                        return Err(ProviderError::stream(
                            api,
                            "the stream ended before the response was complete",
                        ));
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::stream(
                        api,
                        format!("reading the stream: {e}"),
                    ));
                }
                Ok(Some(Ok(event))) => {
                    self.decoder
                        .event(&event.event, &event.data, &mut self.scratch)?;
                }
            }
            for e in self.scratch.drain(..) {
                match e {
                    ModelEvent::Part(p) => self.pending.push_back(p),
                    ModelEvent::Usage(u) => {
                        self.usage.input += u.input;
                        self.usage.output += u.output;
                    }
                    ModelEvent::Done => self.done = true,
                }
            }
        }
    }

    /// Token counts reported so far.
    pub(crate) fn usage(&self) -> Usage {
        self.usage
    }
}

/// Why the byte stream under the SSE parser failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

fn headers(wire: &dyn WireApi, key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    wire.auth(key, &mut h);
    h
}

/// The wire API of `api`: the one place that names each provider module.
pub(crate) fn wire(api: ModelApi) -> &'static dyn WireApi {
    match api {
        ModelApi::OpenAiResponses => &openai::Responses,
        ModelApi::OpenAiChat => &openai::Chat,
        ModelApi::AnthropicMessages => &anthropic::Messages,
    }
}

/// Whether a failed response is worth another attempt: the provider's `x-should-retry` when
/// it says, else 408, 409, 429 and every 5xx (529 is Anthropic's "overloaded").
fn should_retry(r: &reqwest::Response) -> bool {
    match r
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    let s = r.status();
    s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::CONFLICT
        || s == StatusCode::TOO_MANY_REQUESTS
        || s.is_server_error()
}

/// The delay a provider asks for: `retry-after-ms` (OpenAI), else `retry-after` in seconds.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Exponential backoff: `base`, `2 base`, `4 base`, ...
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
}

async fn read_bounded(mut r: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Reads the provider's error body: OpenAI's `{"error": {"message", "type", "code"}}` and
/// Anthropic's `{"type": "error", "error": {"type", "message"}}` alike.
pub(crate) fn error_from_body(api: ModelApi, status: u16, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = field("message")
        .or_else(|| error.and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| {
            let t = body.trim();
            if t.is_empty() {
                "no details given".to_owned()
            } else {
                t.chars().take(500).collect()
            }
        });
    ProviderError {
        api,
        status: Some(status),
        kind: field("type"),
        code: field("code"),
        message,
        attempts: 1,
    }
}

fn transport_message(e: &reqwest::Error, url: &str) -> String {
    let text = if e.is_connect() {
        format!("cannot connect to {url}")
    } else if e.is_timeout() {
        format!("{url} timed out")
    } else {
        format!("request to {url} failed")
    };
    crate::with_causes(text, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 3), b * 4);
        assert!(backoff(b, 200) > b);
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_bodies_of_both_providers() {
        let e = error_from_body(
            ModelApi::OpenAiResponses,
            401,
            r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "openai responses API error: HTTP 401 Unauthorized (invalid_request_error, invalid_api_key): Incorrect API key provided."
        );
        let e = error_from_body(
            ModelApi::AnthropicMessages,
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.kind.as_deref(), Some("overloaded_error"));
        assert_eq!(e.message, "Overloaded");
        let e = error_from_body(ModelApi::OpenAiChat, 502, "<html>bad gateway</html>");
        assert_eq!(e.message, "<html>bad gateway</html>");
    }
}
