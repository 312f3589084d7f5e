//! `GET /admin/usage`: usage and cost grouped by any of tenant, key, model,
//! upstream model, provider, day, hour, over a time range, as CSV or JSON,
//! streamed from the database row by row (never loaded whole).
//!
//! The admin key sees every tenant (and may filter with `tenant=`); a
//! tenant's own virtual key sees only its own tenant.
//!
//! Query: `from`, `to` (RFC 3339 or `YYYY-MM-DD`, UTC; default the last 30
//! days), `group_by` (comma-separated; default `tenant,model`), `format`
//! (`csv` or `json`, default `json`), `tenant`.

use super::AdminContext;
use crate::downstream::respond::{response_header, UnknownLength};
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use sluice_ledger::export::CsvEncoder;
use sluice_ledger::{GroupKey, ReportQuery};

/// A usage query a caller may not make, or that does not parse.
fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadQuery {
        message: message.into(),
    }
}

/// A report bound: RFC 3339, or `YYYY-MM-DD` (midnight UTC), as unix micros.
pub fn parse_time_us(text: &str) -> Option<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_microsecond());
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_microsecond())
}

fn parse_time(text: &str, field: &'static str) -> Result<i64, GatewayError> {
    parse_time_us(text).ok_or_else(|| {
        bad(format!(
            "{field} must be an RFC 3339 time or YYYY-MM-DD, got {text:?}"
        ))
    })
}

/// Serves `GET /admin/usage`.
pub async fn serve(
    admin: &AdminContext<'_>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let is_admin = admin.access.is_admin(&session.req_header().headers);
    let own_tenant = if is_admin {
        None
    } else {
        let key = admin
            .access
            .identify_always(&session.req_header().headers)
            .await?;
        Some(key.tenant.clone())
    };
    let query = session.req_header().uri.query().unwrap_or("");
    let mut from = None;
    let mut to = None;
    let mut group_by = vec![GroupKey::Tenant, GroupKey::Model];
    let mut csv = false;
    let mut tenant: Option<String> = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "from" => from = Some(parse_time(&v, "from")?),
            "to" => to = Some(parse_time(&v, "to")?),
            "group_by" => {
                group_by = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            GroupKey::parse(s.trim()).ok_or_else(|| {
                                bad(format!("unknown group_by {s:?}; use tenant, key, model, upstream_model, provider, day, hour"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
            }
            "format" => match v.as_ref() {
                "csv" => csv = true,
                "json" => csv = false,
                other => return Err(bad(format!("format must be csv or json, got {other:?}"))),
            },
            "tenant" => tenant = Some(v.into_owned()),
            other => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    if let (Some(own), Some(asked)) = (&own_tenant, &tenant) {
        if own != asked {
            // Another tenant's data does not exist for this caller.
            return Err(GatewayError::UnknownRoute {
                method: "GET".into(),
                path: "/admin/usage".into(),
            });
        }
    }
    let to = to.unwrap_or_else(sluice_ledger::unix_micros_now);
    let from = from.unwrap_or(to - 30 * 24 * 3600 * 1_000_000);
    if from >= to {
        return Err(bad("from must be before to"));
    }
    let mut report = ReportQuery::new(from, to, &group_by);
    if let Some(t) = own_tenant.or(tenant) {
        report = report.for_tenant(t);
    }
    let Some(store) = admin.accounting.store().cloned() else {
        return Err(GatewayError::LedgerUnavailable);
    };
    let mut rows = {
        let _runtime = admin.control.enter();
        store.spawn_report(report.clone(), 64)
    };

    ctx.status = 200;
    let mut header = response_header(ctx, 200).map_err(|_| GatewayError::LedgerUnavailable)?;
    let _ = header.insert_header(
        "content-type",
        if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/json"
        },
    );
    let _ = UnknownLength::choose(session).apply(&mut header);
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return Ok(());
    }
    let encoder = CsvEncoder::new(&report);
    let opening = if csv {
        encoder.header().unwrap_or_default()
    } else {
        b"{\"object\":\"list\",\"data\":[".to_vec()
    };
    let _ = session
        .write_response_body(Bytes::from(opening), false)
        .await;
    let mut first = true;
    while let Some(row) = rows.recv().await {
        let chunk = match row {
            Ok(row) if csv => encoder.row(&row).unwrap_or_default(),
            Ok(row) => {
                let mut out = if first { Vec::new() } else { b",".to_vec() };
                let _ = serde_json::to_writer(&mut out, &row);
                out
            }
            Err(e) => {
                // Headers are sent: a truncated body must not look complete.
                tracing::warn!(error = %e, "usage report failed mid-stream");
                session.set_keepalive(None);
                session.shutdown().await;
                return Ok(());
            }
        };
        first = false;
        if session
            .write_response_body(Bytes::from(chunk), false)
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    let closing: &'static [u8] = if csv { b"" } else { b"]}" };
    let _ = session
        .write_response_body(Bytes::from_static(closing), true)
        .await;
    Ok(())
}
