//! Per-call options: what goes on the wire, timeouts, and the Python client's callbacks as
//! plain closures, called on the calling thread. The types are `runtimeuse_client_core`'s,
//! with blocking callbacks.
//!
//! Unlike the async clients, these options have no callback time limits: a closure runs on
//! the thread that reads the connection and cannot be interrupted; bound its work inside it,
//! or cancel the request from another thread with an [`AbortHandle`](crate::AbortHandle).

use runtimeuse_client_core::callbacks::BlockingCallbacks;
use runtimeuse_client_core::options::CallOptions;
use runtimeuse_proto::{CommandBatch, Invocation};

/// Options of a query: the invocation's fields (system prompt, model, …), timeouts and
/// closures as callbacks. Clones share the closures.
pub type QueryOptions = CallOptions<Invocation, BlockingCallbacks>;

/// Options of a command batch: its fields besides the commands, timeouts and closures as
/// callbacks.
pub type ExecuteCommandsOptions = CallOptions<CommandBatch, BlockingCallbacks>;
