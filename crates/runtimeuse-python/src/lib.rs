//! The native part of the `runtimeuse_rs` Python package: the request layer every Rust client
//! shares (`runtimeuse-client-core`) and the blocking client's WebSocket
//! (`runtimeuse-tungstenite`), behind a small surface that the package's Python code
//! (`python/runtimeuse_rs`) turns into the upstream `runtimeuse-client` API.
//!
//! `conn::Conn` is a connection whose socket the calling thread drives: the asyncio client
//! watches its file descriptor in the event loop and pumps it when readable; the blocking
//! client pumps it with the GIL released. No Rust thread runs beside Python, so a round trip
//! costs no thread hand-offs, and nothing is read from the socket that Python has not asked
//! for (a pump hands out at most 1,024 items), so memory cannot grow with the stream.
//! `driver::Driver` is the same request layer for custom transports, fed by Python.

mod conn;
mod convert;
mod core;
mod driver;
mod pump;
mod wire;

use pyo3::prelude::*;

/// The extension module `runtimeuse_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("NativeError", py.get_type::<convert::NativeError>())?;
    m.add_function(wrap_pyfunction!(convert::set_models, m)?)?;
    m.add_class::<conn::Conn>()?;
    m.add_class::<driver::Driver>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
