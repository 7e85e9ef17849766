//! How the clients (and the server driver) close a WebSocket: how long they wait for the peer,
//! and which close code says why a frame was refused. The async pump and the blocking client
//! both follow it.

use std::time::Duration;

use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;

/// How long a close waits for the peer when the connection already failed (a timeout, a dead
/// peer, a protocol error): only long enough to hand over our close frame.
pub const CLOSE_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// How long a close waits for the peer's close frame after a clean end.
pub const CLOSE_AFTER_SUCCESS: Duration = Duration::from_secs(1);

/// The wait of a close after a clean end (`ok`) or a failure.
pub fn close_wait(ok: bool) -> Duration {
    if ok {
        CLOSE_AFTER_SUCCESS
    } else {
        CLOSE_AFTER_FAILURE
    }
}

/// The close code for a read error: 1007 for text that is not UTF-8, 1009 for a frame or
/// message over the limit, 1002 for another protocol violation; none when the transport itself
/// failed or the connection was already closing.
pub fn close_code(e: &tungstenite::Error) -> Option<CloseCode> {
    match e {
        tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
        tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        ) => None,
        tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::CapacityError;

    #[test]
    fn refused_frames_get_the_code_that_says_why() {
        let utf8 = tungstenite::Error::Utf8("bad".into());
        assert_eq!(close_code(&utf8), Some(CloseCode::Invalid));
        let big = tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        assert_eq!(close_code(&big), Some(CloseCode::Size));
        let reset = tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(close_code(&reset), None);
        let masked = tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(close_code(&masked), Some(CloseCode::Protocol));
        assert_eq!(close_wait(true), CLOSE_AFTER_SUCCESS);
        assert_eq!(close_wait(false), CLOSE_AFTER_FAILURE);
    }
}
