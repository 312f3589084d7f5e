//! Request filters: the checks every request passes before it is routed.
//!
//! Today this holds request identity ([`RequestId`]): honour a caller's
//! `x-request-id` when it is sane, mint one otherwise. Auth (virtual keys),
//! quotas, budgets and stream control join here as plain functions over plain
//! types, so they can be unit-tested and benchmarked without a server; only
//! `proxy/` wires them into pingora.

mod request_id;

pub use request_id::RequestId;
