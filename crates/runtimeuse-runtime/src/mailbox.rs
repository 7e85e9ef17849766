//! What a connection's tasks hand its loop: the messages (`Cmd`), the sender they use
//! (`Outbox`, which waits for room in the connection's backlog), and the loop's end of the
//! channel (`Mailbox`). A leaf: it imports nothing of this crate, so that commands, artifacts,
//! handlers and the connection loop can all use it.

use runtimeuse_proto::{CommandExecutionResult, OutputStream, QueryResult, RequestId};
use runtimeuse_tokio::server::Backlog;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What request tasks ask of the connection loop.
#[derive(Debug)]
pub(crate) enum Cmd {
    Assistant(Vec<String>),
    Output(OutputStream, Arc<str>, String),
    FlushOutput(OutputStream),
    Error(String, Value),
    Artifact { filename: String, filepath: String },
    Finish(Terminal),
    ConfirmEnd,
}

/// How a request ended.
#[derive(Debug)]
pub(crate) enum Terminal {
    Query(QueryResult),
    Commands(CommandExecutionResult),
    Fail(String, Value),
    Cancelled,
}

impl Cmd {
    /// The bytes of client-bound text it carries, as counted in the connection's backlog.
    fn bytes(&self) -> usize {
        match self {
            Cmd::Assistant(blocks) => blocks.iter().map(String::len).sum(),
            Cmd::Output(_, _, text) => text.len(),
            Cmd::Error(error, _) => error.len(),
            _ => 0,
        }
    }
}

pub(crate) type Message = (Option<RequestId>, Cmd);

/// When a connection's producers may hand it more output: while its backlog is under its
/// limit, and the server's total under its own; over the total, only connections that hold
/// little (under [`Room::floor`]) go on, so that the ones holding the most stall first and a
/// new, small request is still served.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    backlog: Backlog,
    max: usize,
    max_total: usize,
}

impl Room {
    pub(crate) fn new(backlog: Backlog, max: usize, max_total: usize) -> Self {
        Self {
            backlog,
            max,
            max_total,
        }
    }

    /// What a connection may hold and still go on while the total is over its limit.
    fn floor(&self) -> usize {
        (self.max / 16).min(64 << 10)
    }

    fn has_room(&self, backlog: &Backlog) -> bool {
        self.has_room_below(backlog, self.max)
    }

    /// Whether `backlog` holds less than `limit` and the total leaves room.
    fn has_room_below(&self, backlog: &Backlog, limit: usize) -> bool {
        let mine = backlog.bytes();
        mine < limit
            && backlog
                .total()
                .is_none_or(|t| t.bytes() < self.max_total || mine < self.floor())
    }
}

/// A sender tagged with the request it speaks for (`None`: the session itself).
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Message>,
    request: Option<RequestId>,
    room: Room,
}

impl Outbox {
    /// Hands `cmd` to the connection, first waiting for room when it carries output: a client
    /// that reads slowly slows what produces its output (a command then blocks writing to its
    /// pipe), instead of filling memory.
    pub(crate) async fn send(&self, cmd: Cmd) -> Result<(), ()> {
        let bytes = cmd.bytes();
        if bytes > 0 {
            let room = &self.room;
            if !room.has_room(&room.backlog) {
                // Held at the limit: wait until half of it has gone, not for each frame that
                // leaves (a producer would otherwise run once per frame sent).
                let low = room.max / 2;
                let wait = |b: &Backlog| room.has_room_below(b, low);
                room.backlog.wait_until(wait, low, room.max_total).await;
            }
            room.backlog.add(bytes);
        }
        let sent = self.tx.send((self.request, cmd)).await;
        if let Err(mpsc::error::SendError((_, cmd))) = sent {
            self.room.backlog.sub(cmd.bytes());
            return Err(());
        }
        Ok(())
    }

    /// An outbox to the same connection that speaks for the session itself.
    pub(crate) fn of_session(&self) -> Outbox {
        Outbox {
            tx: self.tx.clone(),
            request: None,
            room: self.room.clone(),
        }
    }
}

/// The channel through which a connection's tasks speak to its loop, made when first needed:
/// tokio allocates a channel's first block of 32 slots up front (2.6 KB of `Message`s), which
/// an idle connection then does not pay.
pub(crate) struct Mailbox {
    channel: Option<(mpsc::Sender<Message>, mpsc::Receiver<Message>)>,
    room: Room,
}

impl Mailbox {
    pub(crate) fn new(room: Room) -> Self {
        Self {
            channel: None,
            room,
        }
    }

    pub(crate) fn outbox(&mut self, request: Option<RequestId>) -> Outbox {
        let (tx, _) = self.channel.get_or_insert_with(|| mpsc::channel(64));
        Outbox {
            tx: tx.clone(),
            request,
            room: self.room.clone(),
        }
    }

    /// Closes the channel: what request tasks send from now on fails at once (the
    /// connection is over).
    pub(crate) fn close(&mut self) {
        if let Some((_, rx)) = &mut self.channel {
            rx.close();
        }
    }

    /// The next message, no longer counted in the backlog (the session's frames count from
    /// now on); pending forever while there is no channel. Never `None`: the mailbox keeps a
    /// sender.
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        let message = match &mut self.channel {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        };
        if let Some((_, cmd)) = &message {
            self.room.backlog.sub(cmd.bytes());
        }
        message
    }
}
