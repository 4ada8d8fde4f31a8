//! Websocket connections speaking protocol v1.

pub mod connection;
