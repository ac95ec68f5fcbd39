//! The store gateway's wire protocol: agents that cannot reach etcd (fleetd on its embedded store,
//! the `local` provider's nodes) use fleetd's store through its API instead, with a token of scope
//! `agent:NODE:APPS` and the same least privilege as an agent's etcd role.
//!
//! `POST /v1/store/{get,range,put,delete,txn,grant,keep_alive,revoke}` with JSON bodies
//! ([`Request`]); values travel as UTF-8 text (fleet's records are JSON). [`super::http::HttpStore`]
//! is the client; fleetd's `access::gateway` serves it, checking each call against the token.
//! `POST /v1/store/watch` ([`WatchRequest`]) answers with a stream: one JSON line per event
//! ([`WireWatchEvent`]), blank lines to keep the connection alive, an `error` line (or the end of
//! the stream) when the watch is lost.

use serde::{Deserialize, Serialize};

use super::{KeyValue, LeaseId, Revision, StoreError};

/// Keys and values one range answer carries at most (beyond one key): far under the 10 MB an
/// HTTP client reads by default and what a proxy lets through, whatever the queue holds. Each
/// page is read at its own revision: the gateway's readers (agents polling their queue) claim
/// by compare-and-swap and need no snapshot across pages.
pub const RANGE_PAGE_BYTES: usize = 4 << 20;

/// The most one answer may be: one value as large as an app may admit (`max_input_bytes`
/// is at most 16 MiB, its JSON escaped once more on the wire) in a page of its own.
pub const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// A key-value pair on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireKv {
    pub key: String,
    pub value: String,
    pub mod_revision: Revision,
    pub create_revision: Revision,
    pub lease: Option<LeaseId>,
}

impl WireKv {
    pub fn from_kv(kv: KeyValue) -> Result<WireKv, StoreError> {
        let value = String::from_utf8(kv.value)
            .map_err(|_| StoreError::Corrupt { key: kv.key.clone(), detail: "not UTF-8 text".into() })?;
        Ok(WireKv {
            key: kv.key,
            value,
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            lease: kv.lease,
        })
    }

    pub fn into_kv(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value.into_bytes(),
            mod_revision: self.mod_revision,
            create_revision: self.create_revision,
            lease: self.lease,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WireOp {
    Put { key: String, value: String, lease: Option<LeaseId> },
    Delete { key: String },
}

/// How often the gateway writes a blank line to a quiet watch, and how long a client waits
/// without one before it takes the connection for lost.
pub const WATCH_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);
pub const WATCH_SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// A watch through the gateway: events under `prefix` from revision `from` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRequest {
    pub prefix: String,
    pub from: Revision,
}

/// One line of a watch's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireWatchEvent {
    Put(WireKv),
    Delete {
        key: String,
        mod_revision: Revision,
    },
    /// The watch is lost (the gateway's own watch ended or fell behind): read again, watch again.
    Error(super::http::GatewayError),
}

impl WireWatchEvent {
    pub fn from_event(ev: super::StoreResult<super::WatchEvent>) -> WireWatchEvent {
        match ev {
            Ok(super::WatchEvent::Put(kv)) => match WireKv::from_kv(kv) {
                Ok(kv) => WireWatchEvent::Put(kv),
                Err(e) => WireWatchEvent::Error(super::http::GatewayError::from_error(&e)),
            },
            Ok(super::WatchEvent::Delete { key, mod_revision }) => WireWatchEvent::Delete { key, mod_revision },
            Err(e) => WireWatchEvent::Error(super::http::GatewayError::from_error(&e)),
        }
    }

    pub fn into_event(self) -> super::StoreResult<super::WatchEvent> {
        match self {
            WireWatchEvent::Put(kv) => Ok(super::WatchEvent::Put(kv.into_kv())),
            WireWatchEvent::Delete { key, mod_revision } => Ok(super::WatchEvent::Delete { key, mod_revision }),
            WireWatchEvent::Error(e) => Err(e.into_error()),
        }
    }
}

/// One gateway call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Request {
    Get {
        key: String,
    },
    /// One page of the range: keys after `after` (from the first when absent), at most
    /// [`RANGE_PAGE_BYTES`] of them; the answer's `more` says whether to ask for the next.
    Range {
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    Put {
        key: String,
        value: String,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    Txn {
        compares: Vec<(String, Revision)>,
        ops: Vec<WireOp>,
    },
    Grant {
        ttl_ms: u64,
    },
    KeepAlive {
        lease: LeaseId,
    },
    Revoke {
        lease: LeaseId,
    },
}

/// Its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    Kv {
        kv: Option<WireKv>,
    },
    Kvs {
        kvs: Vec<WireKv>,
        revision: Revision,
        #[serde(default)]
        more: bool,
    },
    Revision {
        revision: Revision,
    },
    Deleted {
        existed: bool,
    },
    Txn {
        succeeded: bool,
        revision: Revision,
    },
    Lease {
        lease: LeaseId,
    },
    Done,
}
