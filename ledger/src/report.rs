//! Usage and cost grouped by tenant / key / model / provider / day / hour.
//!
//! Build a [`ReportQuery`], then stream its rows with [`Store::report`]
//! (borrowing) or [`Store::spawn_report`] (owned, for HTTP bodies), and
//! write them with [`crate::export`]. Columns always come in the same
//! order: grouped columns in [`GroupKey::ALL`] order, then the metric columns
//! ([`METRIC_COLUMNS`]).
//!
//! Costs are exact: the database sums each record's `cost_picos` (as whole
//! micro-dollars and remainders, so neither sum can overflow `BIGINT` before
//! the totals pass about 9 trillion dollars and 9 trillion records), the
//! two are joined in `i128`, and the total is rounded to micro-dollars once.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::export::format_usd_picos;
use crate::pricing::{round_picos_to_micros, PICOS_PER_MICRO};
use crate::store::Store;
use crate::LedgerError;

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// A column to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// The tenant (empty / null for requests without one).
    Tenant,
    /// The virtual key id.
    Key,
    /// The model the client asked for.
    Model,
    /// The model the upstream was called with.
    UpstreamModel,
    /// The upstream / provider.
    Provider,
    /// The UTC day, as `YYYY-MM-DD`.
    Day,
    /// The UTC hour, as `YYYY-MM-DDTHH:00:00Z`.
    Hour,
}

impl GroupKey {
    /// Every key, in output column order.
    pub const ALL: [GroupKey; 7] = [
        GroupKey::Tenant,
        GroupKey::Key,
        GroupKey::Model,
        GroupKey::UpstreamModel,
        GroupKey::Provider,
        GroupKey::Day,
        GroupKey::Hour,
    ];

    /// The output column name (CSV header, JSON key), also accepted by [`GroupKey::parse`].
    pub fn column_name(self) -> &'static str {
        match self {
            GroupKey::Tenant => "tenant",
            GroupKey::Key => "key_id",
            GroupKey::Model => "model",
            GroupKey::UpstreamModel => "upstream_model",
            GroupKey::Provider => "provider",
            GroupKey::Day => "day",
            GroupKey::Hour => "hour",
        }
    }

    /// Parses a column name (`tenant`, `key_id` or `key`, `model`,
    /// `upstream_model`, `provider`, `day`, `hour`), e.g. from `?group_by=`.
    pub fn parse(text: &str) -> Option<GroupKey> {
        match text.trim() {
            "key" => Some(GroupKey::Key),
            name => GroupKey::ALL.into_iter().find(|k| k.column_name() == name),
        }
    }

    /// The SQL expression grouped on. Time buckets are unix microseconds
    /// truncated to the hour or day (UTC).
    fn sql_expression(self) -> &'static str {
        match self {
            GroupKey::Tenant => "tenant",
            GroupKey::Key => "key_id",
            GroupKey::Model => "model",
            GroupKey::UpstreamModel => "upstream_model",
            GroupKey::Provider => "provider",
            GroupKey::Day => "((time_us / 86400000000) * 86400000000)",
            GroupKey::Hour => "((time_us / 3600000000) * 3600000000)",
        }
    }

    fn is_time_bucket(self) -> bool {
        matches!(self, GroupKey::Day | GroupKey::Hour)
    }
}

/// The metric columns of every report row, after the grouped columns.
/// Columns added later come last (`cost_picos`, then `cache_write_tokens`),
/// after the columns that were there before them, so readers that go by
/// position still find those where they were.
pub const METRIC_COLUMNS: [&str; 9] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cost_micros",
    "cost_usd",
    "unpriced_requests",
    "cost_picos",
    "cache_write_tokens",
];

/// A report: a time range `[from_us, to_us)`, the columns to group by and
/// optionally one tenant to restrict to (a tenant's own key sees only its
/// own usage). The SQL is built once, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    from_us: i64,
    to_us: i64,
    group_by: Vec<GroupKey>,
    tenant: Option<String>,
    sql: String,
}

impl ReportQuery {
    /// Records with `from_us <= time_us < to_us` (unix microseconds),
    /// grouped by `group_by` (order and repeats do not matter; no keys gives
    /// one total row, even over no records).
    pub fn new(from_us: i64, to_us: i64, group_by: &[GroupKey]) -> ReportQuery {
        let mut keys = group_by.to_vec();
        keys.sort();
        keys.dedup();
        let mut query = ReportQuery {
            from_us,
            to_us,
            group_by: keys,
            tenant: None,
            sql: String::new(),
        };
        query.sql = query.build_sql();
        query
    }

    /// Restricts the report to `tenant`'s records.
    pub fn for_tenant(mut self, tenant: impl Into<String>) -> ReportQuery {
        self.tenant = Some(tenant.into());
        self.sql = self.build_sql();
        self
    }

    /// The grouped columns, in output order.
    pub fn group_by(&self) -> &[GroupKey] {
        &self.group_by
    }

    /// The tenant the report is restricted to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// `[from_us, to_us)`.
    pub fn range(&self) -> (i64, i64) {
        (self.from_us, self.to_us)
    }

    /// Every output column name, in order: grouped, then [`METRIC_COLUMNS`].
    pub fn columns(&self) -> Vec<&'static str> {
        self.group_by
            .iter()
            .map(|k| k.column_name())
            .chain(METRIC_COLUMNS)
            .collect()
    }

    fn build_sql(&self) -> String {
        let exprs: Vec<&str> = self.group_by.iter().map(|k| k.sql_expression()).collect();
        let mut select: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
        select.extend(
            [
                "COUNT(*)",
                "CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT)",
                "CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT)",
                "CAST(COALESCE(SUM(cached_prompt_tokens), 0) AS BIGINT)",
                "CAST(COALESCE(SUM(1 - priced), 0) AS BIGINT)",
                // Both backends truncate `/` and `%` towards zero, so for
                // every row (picos / 10^6) * 10^6 + picos % 10^6 = picos.
                "CAST(COALESCE(SUM(cost_picos / 1000000), 0) AS BIGINT)",
                "CAST(COALESCE(SUM(cost_picos % 1000000), 0) AS BIGINT)",
                "CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT)",
            ]
            .map(String::from),
        );
        let mut sql = format!(
            "SELECT {} FROM usage_records WHERE time_us >= $1 AND time_us < $2",
            select.join(", ")
        );
        if self.tenant.is_some() {
            sql.push_str(" AND tenant = $3");
        }
        if !exprs.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&exprs.join(", "));
            // NULLs last on both backends (SQLite sorts them first by default).
            let order: Vec<String> = exprs
                .iter()
                .map(|e| format!("({e} IS NULL), {e}"))
                .collect();
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        sql
    }

    fn decode(&self, row: &AnyRow) -> Result<ReportRow, LedgerError> {
        self.decode_columns(row)
            .map_err(LedgerError::database("read report row"))
    }

    fn decode_columns(&self, row: &AnyRow) -> Result<ReportRow, sqlx::Error> {
        let mut group = Vec::with_capacity(self.group_by.len());
        for (i, key) in self.group_by.iter().enumerate() {
            let value = if key.is_time_bucket() {
                Some(format_bucket(*key, row.try_get(i)?))
            } else {
                row.try_get::<Option<String>, _>(i)?
            };
            group.push((*key, value));
        }
        let base = self.group_by.len();
        let whole_micros: i64 = row.try_get(base + 5)?;
        let remainder_picos: i64 = row.try_get(base + 6)?;
        Ok(ReportRow {
            group,
            requests: row.try_get(base)?,
            prompt_tokens: row.try_get(base + 1)?,
            completion_tokens: row.try_get(base + 2)?,
            cached_prompt_tokens: row.try_get(base + 3)?,
            cache_write_tokens: row.try_get(base + 7)?,
            cost_picos: i128::from(whole_micros) * i128::from(PICOS_PER_MICRO)
                + i128::from(remainder_picos),
            unpriced_requests: row.try_get(base + 4)?,
        })
    }
}

/// One report row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The grouped columns and their values, in output order. `None` is a
    /// NULL (a request without tenant or key).
    pub group: Vec<(GroupKey, Option<String>)>,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens, cache reads and writes included.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Prompt tokens read from the provider's cache.
    pub cached_prompt_tokens: i64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: i64,
    /// Exact cost of the priced requests, in pico-dollars (1e-12 USD): the
    /// sum of every record's `cost_picos`.
    pub cost_picos: i128,
    /// Requests without a known price (not included in the cost).
    pub unpriced_requests: i64,
}

impl ReportRow {
    /// The value of a grouped column, if the report grouped by it.
    pub fn value(&self, key: GroupKey) -> Option<Option<&str>> {
        self.group
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_deref())
    }

    /// The cost in micro-dollars: [`ReportRow::cost_picos`] rounded half up
    /// once, so it is within half a micro-dollar of the exact total however
    /// many records it sums.
    pub fn cost_micros(&self) -> i64 {
        round_picos_to_micros(self.cost_picos)
    }

    /// The exact cost in USD as a decimal string (six to twelve places,
    /// [`format_usd_picos`]).
    pub fn cost_usd(&self) -> String {
        format_usd_picos(self.cost_picos)
    }

    /// The metric values as text, in [`METRIC_COLUMNS`] order.
    pub fn metric_fields(&self) -> [String; 9] {
        [
            self.requests.to_string(),
            self.prompt_tokens.to_string(),
            self.completion_tokens.to_string(),
            self.cached_prompt_tokens.to_string(),
            self.cost_micros().to_string(),
            self.cost_usd(),
            self.unpriced_requests.to_string(),
            self.cost_picos.to_string(),
            self.cache_write_tokens.to_string(),
        ]
    }
}

impl Serialize for ReportRow {
    /// A JSON object with the columns in output order; NULL group values are
    /// `null`, `cost_usd` an exact decimal string, and `cost_picos` a string
    /// of digits: it passes 2^53 (beyond which JSON readers that hold numbers
    /// as doubles lose digits) at about $9,007.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.group.len() + METRIC_COLUMNS.len()))?;
        for (key, value) in &self.group {
            map.serialize_entry(key.column_name(), value)?;
        }
        map.serialize_entry("requests", &self.requests)?;
        map.serialize_entry("prompt_tokens", &self.prompt_tokens)?;
        map.serialize_entry("completion_tokens", &self.completion_tokens)?;
        map.serialize_entry("cached_prompt_tokens", &self.cached_prompt_tokens)?;
        map.serialize_entry("cost_micros", &self.cost_micros())?;
        map.serialize_entry("cost_usd", &self.cost_usd())?;
        map.serialize_entry("unpriced_requests", &self.unpriced_requests)?;
        map.serialize_entry("cost_picos", &self.cost_picos.to_string())?;
        map.serialize_entry("cache_write_tokens", &self.cache_write_tokens)?;
        map.end()
    }
}

impl Store {
    /// Streams the rows of `query` from the database (sqlx `fetch`: rows
    /// arrive as the database produces them, nothing is loaded whole).
    pub fn report<'a>(
        &'a self,
        query: &'a ReportQuery,
    ) -> BoxStream<'a, Result<ReportRow, LedgerError>> {
        let mut sql = sqlx::query(&query.sql)
            .bind(query.from_us)
            .bind(query.to_us);
        if let Some(tenant) = &query.tenant {
            sql = sql.bind(tenant.as_str());
        }
        sql.fetch(self.pool())
            .map(move |row| {
                row.map_err(LedgerError::database("run report"))
                    .and_then(|row| query.decode(&row))
            })
            .boxed()
    }

    /// [`Store::report`] on a task of its own, for callers that need an
    /// owned stream (an HTTP response body): rows arrive on the returned
    /// channel, at most `buffer` ahead of the reader; dropping the receiver
    /// stops the query.
    pub fn spawn_report(
        &self,
        query: ReportQuery,
        buffer: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<ReportRow, LedgerError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        let store = self.clone();
        tokio::spawn(async move {
            let mut rows = store.report(&query);
            while let Some(row) = rows.next().await {
                let failed = row.is_err();
                if tx.send(row).await.is_err() || failed {
                    break;
                }
            }
        });
        rx
    }
}

/// Formats a time bucket start (unix micros) as `YYYY-MM-DD` or `YYYY-MM-DDTHH:00:00Z`.
fn format_bucket(key: GroupKey, start_us: i64) -> String {
    let days = start_us.div_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if key == GroupKey::Hour {
        let hour = start_us.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR;
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_conversion() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
        // 2025-03-04 13:45 UTC
        let t = 1_741_095_900_000_000;
        assert_eq!(format_bucket(GroupKey::Day, t), "2025-03-04");
        assert_eq!(
            format_bucket(GroupKey::Hour, t / MICROS_PER_HOUR * MICROS_PER_HOUR),
            "2025-03-04T13:00:00Z"
        );
    }

    #[test]
    fn columns_are_in_a_stable_order() {
        let q = ReportQuery::new(
            0,
            1,
            &[
                GroupKey::Day,
                GroupKey::Tenant,
                GroupKey::Day,
                GroupKey::Model,
            ],
        );
        assert_eq!(
            q.group_by(),
            [GroupKey::Tenant, GroupKey::Model, GroupKey::Day]
        );
        assert_eq!(
            q.columns(),
            [
                "tenant",
                "model",
                "day",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "cached_prompt_tokens",
                "cost_micros",
                "cost_usd",
                "unpriced_requests",
                "cost_picos",
                "cache_write_tokens"
            ]
        );
        for key in GroupKey::ALL {
            assert_eq!(GroupKey::parse(key.column_name()), Some(key));
        }
        assert_eq!(GroupKey::parse("key"), Some(GroupKey::Key));
        assert_eq!(GroupKey::parse("region"), None);
    }

    #[test]
    fn costs_round_once_from_exact_picos() {
        let row = |cost_picos| ReportRow {
            group: Vec::new(),
            requests: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_prompt_tokens: 0,
            cache_write_tokens: 0,
            cost_picos,
            unpriced_requests: 0,
        };
        // 1000 records of 10.14 µ$ each.
        let total = row(10_140_000_000);
        assert_eq!(total.cost_micros(), 10_140);
        assert_eq!(total.cost_usd(), "0.010140");
        assert_eq!(row(10_500_000).cost_micros(), 11, "half up");
        assert_eq!(row(10_499_999).cost_usd(), "0.000010499999");
        // Beyond i64 pico-dollars (about $9.2M) the total stays exact.
        let huge = row(3 * i128::from(i64::MAX));
        assert_eq!(huge.cost_usd(), "27670116.110564327421");
        assert_eq!(huge.cost_micros(), 27_670_116_110_564);
        assert_eq!(huge.metric_fields()[7], "27670116110564327421");
    }

    #[test]
    fn tenant_filter_adds_a_parameter() {
        let q = ReportQuery::new(0, 1, &[GroupKey::Model]);
        assert!(!q.sql.contains("$3"));
        let q = q.for_tenant("acme");
        assert!(q.sql.contains("tenant = $3"));
        assert_eq!(q.tenant(), Some("acme"));
        let total = ReportQuery::new(0, 1, &[]);
        assert!(!total.sql.contains("GROUP BY"));
    }

    #[test]
    fn rows_serialise_in_column_order() {
        let row = ReportRow {
            group: vec![
                (GroupKey::Tenant, None),
                (GroupKey::Model, Some("gpt-4o".into())),
            ],
            requests: 2,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_prompt_tokens: 0,
            cache_write_tokens: 30,
            cost_picos: 1_500_001_390_000,
            unpriced_requests: 1,
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"tenant":null,"model":"gpt-4o","requests":2,"prompt_tokens":10,"completion_tokens":5,"cached_prompt_tokens":0,"cost_micros":1500001,"cost_usd":"1.50000139","unpriced_requests":1,"cost_picos":"1500001390000","cache_write_tokens":30}"#
        );
        assert_eq!(row.value(GroupKey::Model), Some(Some("gpt-4o")));
        assert_eq!(row.value(GroupKey::Tenant), Some(None));
        assert_eq!(row.value(GroupKey::Day), None);
    }
}
