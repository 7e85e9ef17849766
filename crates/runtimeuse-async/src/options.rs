//! Per-call options: what goes on the wire, timeouts, and the Python client's callbacks as
//! async functions. The types are `runtimeuse_client_core`'s, with async callbacks.

use runtimeuse_client_core::callbacks::AsyncCallbacks;
use runtimeuse_client_core::options::CallOptions;
use runtimeuse_proto::{CommandBatch, Invocation};

pub use runtimeuse_client_core::callbacks::BoxFuture;

/// Options of a query: the invocation's fields (system prompt, model, …), timeouts and async
/// callbacks.
///
/// ```
/// use std::time::Duration;
/// use runtimeuse_async::QueryOptions;
///
/// let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
///     .timeout(Duration::from_secs(300))
///     .secret("sk-123")
///     .pre_command("git clone https://example.com/repo")
///     .on_assistant_message(|blocks| async move { println!("{}", blocks.join("")) });
/// ```
pub type QueryOptions = CallOptions<Invocation, AsyncCallbacks>;

/// Options of a command batch: its fields besides the commands, timeouts and async callbacks.
pub type ExecuteCommandsOptions = CallOptions<CommandBatch, AsyncCallbacks>;
