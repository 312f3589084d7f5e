//! Usage and cost records.
//!
//! Planned shape (DESIGN.md, "Account"): one record per request — tokens,
//! price, latency, status — buffered off the request path, written in batches
//! to SQLite (default) or PostgreSQL through sqlx, spooled to disk while the
//! database is away and replayed later, so no record is lost. Nothing is
//! implemented yet; the walking skeleton does not count usage.
