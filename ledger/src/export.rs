//! Writing report rows as CSV or JSON lines.
//!
//! CSV: one header row ([`crate::ReportQuery::columns`]), then one line per
//! row in the same column order, quoted by the `csv` crate (fields holding a
//! comma, quote, CR or LF are quoted, quotes doubled); NULL group values are
//! empty fields. JSON lines: one object per row ([`crate::ReportRow`]'s
//! `Serialize`), keys in the same order. For an HTTP body that is written as
//! rows arrive, use [`CsvEncoder`] per chunk.

use std::io::Write;

use futures_util::{Stream, StreamExt};

use crate::pricing::PICOS_PER_MICRO;
use crate::report::{ReportQuery, ReportRow};
use crate::LedgerError;

/// Micro-dollars as an exact USD decimal with six places: `1500001` ->
/// `"1.500001"`, `-5` -> `"-0.000005"`.
pub fn format_usd(micros: i64) -> String {
    format_usd_picos(i128::from(micros) * i128::from(PICOS_PER_MICRO))
}

/// Pico-dollars as an exact USD decimal: six places as [`format_usd`] writes
/// them, and up to twelve for fractions of a micro-dollar, with trailing
/// zeros past the sixth trimmed: `10_140_000` -> `"0.00001014"`,
/// `1_500_001_000_000` -> `"1.500001"`, `0` -> `"0.000000"`.
pub fn format_usd_picos(picos: i128) -> String {
    const PICOS_PER_USD: u128 = 1_000_000_000_000;
    let sign = if picos < 0 { "-" } else { "" };
    let magnitude = picos.unsigned_abs();
    let fraction = format!("{:012}", magnitude % PICOS_PER_USD);
    let places = fraction.trim_end_matches('0').len().max(6);
    format!(
        "{sign}{}.{}",
        magnitude / PICOS_PER_USD,
        &fraction[..places]
    )
}

fn export_error(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Export(e.to_string())
}

/// Encodes a report as CSV one piece at a time, for streaming bodies.
#[derive(Debug)]
pub struct CsvEncoder {
    columns: Vec<&'static str>,
}

impl CsvEncoder {
    /// An encoder for `query`'s columns.
    pub fn new(query: &ReportQuery) -> CsvEncoder {
        CsvEncoder {
            columns: query.columns(),
        }
    }

    /// The header line, `\n`-terminated.
    pub fn header(&self) -> Result<Vec<u8>, LedgerError> {
        encode_line(&self.columns)
    }

    /// One row's line, `\n`-terminated.
    pub fn row(&self, row: &ReportRow) -> Result<Vec<u8>, LedgerError> {
        encode_line(&row_fields(row))
    }
}

fn row_fields(row: &ReportRow) -> Vec<String> {
    row.group
        .iter()
        .map(|(_, value)| value.clone().unwrap_or_default())
        .chain(row.metric_fields())
        .collect()
}

fn encode_line<S: AsRef<[u8]>>(fields: &[S]) -> Result<Vec<u8>, LedgerError> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(128));
    writer.write_record(fields).map_err(export_error)?;
    writer.into_inner().map_err(export_error)
}

/// Writes `rows` of `query` as CSV to `out`, header first; returns the
/// number of data rows. Stops at the first error.
pub async fn write_csv<S, W>(query: &ReportQuery, rows: S, out: W) -> Result<u64, LedgerError>
where
    S: Stream<Item = Result<ReportRow, LedgerError>>,
    W: Write,
{
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(query.columns()).map_err(export_error)?;
    let mut count = 0;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.next().await {
        writer
            .write_record(row_fields(&row?))
            .map_err(export_error)?;
        count += 1;
    }
    writer.flush().map_err(export_error)?;
    Ok(count)
}

/// Writes `rows` as JSON lines (one object per line) to `out`; returns the
/// number of rows.
pub async fn write_json_lines<S, W>(rows: S, mut out: W) -> Result<u64, LedgerError>
where
    S: Stream<Item = Result<ReportRow, LedgerError>>,
    W: Write,
{
    let mut count = 0;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.next().await {
        serde_json::to_writer(&mut out, &row?).map_err(export_error)?;
        out.write_all(b"\n").map_err(export_error)?;
        count += 1;
    }
    out.flush().map_err(export_error)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::GroupKey;

    fn row(tenant: Option<&str>, model: &str) -> ReportRow {
        ReportRow {
            group: vec![
                (GroupKey::Tenant, tenant.map(String::from)),
                (GroupKey::Model, Some(model.to_string())),
            ],
            requests: 1,
            prompt_tokens: 2,
            completion_tokens: 3,
            cached_prompt_tokens: 0,
            cache_write_tokens: 4,
            cost_picos: 12_390_000,
            unpriced_requests: 0,
        }
    }

    #[test]
    fn usd_formatting_is_exact() {
        assert_eq!(format_usd(0), "0.000000");
        assert_eq!(format_usd(1_500_001), "1.500001");
        assert_eq!(format_usd(-5), "-0.000005");
        assert_eq!(format_usd(i64::MIN), "-9223372036854.775808");
    }

    #[test]
    fn usd_from_picos_keeps_every_digit() {
        assert_eq!(format_usd_picos(0), "0.000000");
        assert_eq!(format_usd_picos(10_140_000), "0.00001014");
        assert_eq!(format_usd_picos(10_140_000_000), "0.010140");
        assert_eq!(format_usd_picos(1_500_001_000_000), "1.500001");
        assert_eq!(format_usd_picos(1), "0.000000000001");
        assert_eq!(format_usd_picos(-390_000), "-0.00000039");
        assert_eq!(format_usd_picos(12_000_000_000_010), "12.00000000001");
        assert_eq!(
            format_usd_picos(i128::MAX),
            "170141183460469231731687303.715884105727"
        );
        assert_eq!(
            format_usd_picos(i128::MIN),
            "-170141183460469231731687303.715884105728"
        );
    }

    #[tokio::test]
    async fn csv_quotes_what_needs_quoting() {
        let query = ReportQuery::new(0, 1, &[GroupKey::Model, GroupKey::Tenant]);
        let rows = vec![
            Ok(row(Some("plain"), "gpt-4o")),
            Ok(row(Some("a,b"), "say \"hi\"")),
            Ok(row(None, "multi\nline")),
        ];
        let mut out = Vec::new();
        let n = write_csv(&query, futures_util::stream::iter(rows), &mut out)
            .await
            .unwrap();
        assert_eq!(n, 3);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "tenant,model,requests,prompt_tokens,completion_tokens,cached_prompt_tokens,cost_micros,cost_usd,unpriced_requests,cost_picos,cache_write_tokens\n\
             plain,gpt-4o,1,2,3,0,12,0.00001239,0,12390000,4\n\
             \"a,b\",\"say \"\"hi\"\"\",1,2,3,0,12,0.00001239,0,12390000,4\n\
             ,\"multi\nline\",1,2,3,0,12,0.00001239,0,12390000,4\n"
        );
        // The per-chunk encoder produces the same bytes.
        let encoder = CsvEncoder::new(&query);
        let mut pieces = encoder.header().unwrap();
        pieces.extend(encoder.row(&row(Some("plain"), "gpt-4o")).unwrap());
        assert!(text.starts_with(std::str::from_utf8(&pieces).unwrap()));
    }

    #[tokio::test]
    async fn csv_of_no_rows_is_just_the_header_and_errors_stop_it() {
        let query = ReportQuery::new(0, 1, &[]);
        let mut out = Vec::new();
        let empty = futures_util::stream::iter(Vec::<Result<ReportRow, LedgerError>>::new());
        assert_eq!(write_csv(&query, empty, &mut out).await.unwrap(), 0);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let failing = futures_util::stream::iter(vec![Err(LedgerError::Closed)]);
        assert!(write_csv(&query, failing, Vec::new()).await.is_err());
    }

    #[tokio::test]
    async fn json_lines_one_object_per_row() {
        let mut out = Vec::new();
        let rows = vec![Ok(row(None, "m1")), Ok(row(Some("t"), "m2"))];
        assert_eq!(
            write_json_lines(futures_util::stream::iter(rows), &mut out)
                .await
                .unwrap(),
            2
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["tenant"], serde_json::Value::Null);
        assert_eq!(lines[1]["model"], "m2");
        assert_eq!(lines[1]["cost_usd"], "0.00001239");
        assert_eq!(lines[1]["cost_micros"], 12);
        assert_eq!(lines[1]["cost_picos"], "12390000");
        assert_eq!(lines[1]["cache_write_tokens"], 4);
    }
}
