//! Test support: a session with injected time and a drain that collects outputs.

// The harness takes one instant as its epoch; the session under test never reads a clock.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use runtimeuse_proto::{Config, Event, Input, Output, Session, Transmit};
use serde_json::Value;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A session and everything it produced, with time as `t0 + offset`.
pub struct Harness {
    pub session: Session,
    pub t0: Instant,
    pub now: Instant,
    /// Text frames sent, parsed as JSON.
    pub sent: Vec<Value>,
    /// Pings sent.
    pub pings: usize,
    pub events: Vec<Event>,
    pub timeout: Instant,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        let t0 = Instant::now();
        let session = Session::new(config, t0);
        let timeout = session.poll_timeout();
        Self {
            session,
            t0,
            now: t0,
            sent: Vec::new(),
            pings: 0,
            events: Vec::new(),
            timeout,
        }
    }

    pub fn at(&mut self, offset_ms: u64) -> Instant {
        let t = self.t0 + ms(offset_ms);
        if t > self.now {
            self.now = t;
        }
        self.now
    }

    /// Drains every output until the timeout.
    pub fn drain(&mut self) {
        loop {
            match self.session.poll_output() {
                Output::Transmit(Transmit::Text(s)) => {
                    let v: Value = serde_json::from_str(&s).expect("session sent invalid JSON");
                    self.sent.push(v);
                }
                Output::Transmit(Transmit::Ping) => self.pings += 1,
                Output::Event(e) => self.events.push(e),
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
            }
        }
    }

    pub fn recv(&mut self, offset_ms: u64, frame: &str) {
        let now = self.at(offset_ms);
        self.session
            .handle_input(Input::Receive(now, frame.as_bytes()));
        self.drain();
    }

    pub fn tick(&mut self, offset_ms: u64) {
        let now = self.at(offset_ms);
        self.session.handle_input(Input::Timeout(now));
        self.drain();
    }

    pub fn close(&mut self, offset_ms: u64) {
        let now = self.at(offset_ms);
        self.session.handle_input(Input::TransportClosed(now));
        self.drain();
    }

    /// Advances to the session's next timeout and fires it.
    pub fn fire_next_timeout(&mut self) {
        let t = self.timeout;
        if t > self.now {
            self.now = t;
        }
        self.session.handle_input(Input::Timeout(self.now));
        self.drain();
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn take_sent(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.sent)
    }

    pub fn terminals(&self) -> usize {
        self.events.iter().filter(|e| e.is_terminal()).count()
    }
}

pub fn message_types(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f["message_type"].as_str().unwrap_or("?"))
        .collect()
}
