//! Websocket connections speaking protocol v1: `transport` owns the socket (reader
//! loop, writer task, pings, rate limit), `connection` speaks the protocol.

pub mod connection;
pub mod transport;
