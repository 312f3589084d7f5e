//! The per-node hash chain over stored records, and its canonical encoding.
//!
//! Every row carries `prev_hash` (the `hash` of the row before it in the same
//! node's chain; 32 zero bytes for `seq = 1`) and its own
//! `hash = SHA-256(canonical_bytes(prev_hash, row))`. Editing any column,
//! deleting or inserting a row, or reordering rows breaks the chain at that
//! row; [`crate::Store::verify`] finds it. Deleting the *newest* rows of a
//! chain cannot be seen from the rows alone: compare `last_seq` with the
//! node's own count if that matters.
//!
//! # Canonical encodings
//!
//! Each row is hashed with the encoding version named by its own
//! `hash_version` column, so rows written before a new version keep
//! verifying as they were written:
//!
//! | version | tag | rows |
//! | --- | --- | --- |
//! | 1 | `b"sluice-ledger/v1\n"` | written before costs were kept in pico-dollars (migration `0003` marks them 1) |
//! | 2 | `b"sluice-ledger/v2\n"` | written before cache writes were counted (migration `0005` gives them `cache_write_tokens = 0`) |
//! | 3 | `b"sluice-ledger/v3\n"` | every row written now ([`HashVersion::CURRENT`]) |
//!
//! The bytes hashed are, in this order:
//!
//! 1. the version's tag (17 bytes);
//! 2. `prev_hash`, 32 raw bytes;
//! 3. every column below that the version covers, in this order, each
//!    encoded as
//!    - *int*: 8 bytes, big-endian two's complement `i64`;
//!    - *text*: 4-byte big-endian byte length, then the UTF-8 bytes;
//!    - *optional*: one byte `0x00` when NULL, else `0x01` followed by the value.
//!
//! | column | encoding | versions |
//! | --- | --- | --- |
//! | node_id | text | 1, 2, 3 |
//! | seq | int | 1, 2, 3 |
//! | record_id | text | 1, 2, 3 |
//! | time_us | int | 1, 2, 3 |
//! | request_id | text | 1, 2, 3 |
//! | tenant | optional text | 1, 2, 3 |
//! | key_id | optional text | 1, 2, 3 |
//! | model | text | 1, 2, 3 |
//! | provider | text | 1, 2, 3 |
//! | upstream_model | text | 1, 2, 3 |
//! | prompt_tokens | int | 1, 2, 3 |
//! | completion_tokens | int | 1, 2, 3 |
//! | cached_prompt_tokens | int | 1, 2, 3 |
//! | cache_write_tokens | int | 3 |
//! | usage_source | text (`reported` / `counted`) | 1, 2, 3 |
//! | cost_micros | int | 1, 2, 3 |
//! | cost_picos | int | 2, 3 |
//! | priced | int (0 / 1) | 1, 2, 3 |
//! | latency_ms | int | 1, 2, 3 |
//! | ttft_ms | optional int | 1, 2, 3 |
//! | http_status | int | 1, 2, 3 |
//! | stream | int (0 / 1) | 1, 2, 3 |
//! | end_state | text (`completed` / `cancelled` / `broken`) | 1, 2, 3 |
//!
//! `hash_version` is not itself an encoded column: it picks the tag, so
//! changing it changes the bytes hashed. Columns a row's version does not
//! hash hold fixed values that [`crate::Store::verify`] checks instead
//! ([`LedgerRow::unhashed_mismatch`]): a version 1 row's `cost_picos` is
//! what migration `0003` derived, `cost_micros x 1,000,000` (saturating,
//! [`crate::micros_to_picos`]); a version 1 or 2 row's `cache_write_tokens`
//! is 0, migration `0005`'s default (those rows were written before cache
//! writes were counted).
//!
//! The values are exactly the stored column values ([`LedgerRow`]), so a
//! verifier needs nothing but the table. Hashes are stored as 64 lower-case
//! hex characters.

use sha2::{Digest, Sha256};

use crate::pricing::micros_to_picos;
use crate::record::{EndState, UsageRecord, UsageSource};

/// A canonical encoding version (module docs), stored per row in
/// `hash_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashVersion {
    /// Every column but `cost_picos`: rows written before costs were exact.
    V1,
    /// Version 1 plus `cost_picos`.
    V2,
    /// Version 2 plus `cache_write_tokens`.
    V3,
}

impl HashVersion {
    /// The version new rows are written with.
    pub const CURRENT: HashVersion = HashVersion::V3;

    /// The number stored in the `hash_version` column.
    pub fn number(self) -> i64 {
        match self {
            HashVersion::V1 => 1,
            HashVersion::V2 => 2,
            HashVersion::V3 => 3,
        }
    }

    /// Reads a stored `hash_version`; `None` for a version this build does not know.
    pub fn from_number(number: i64) -> Option<HashVersion> {
        match number {
            1 => Some(HashVersion::V1),
            2 => Some(HashVersion::V2),
            3 => Some(HashVersion::V3),
            _ => None,
        }
    }

    /// Domain-separation tag, naming the version.
    fn tag(self) -> &'static [u8] {
        match self {
            HashVersion::V1 => b"sluice-ledger/v1\n",
            HashVersion::V2 => b"sluice-ledger/v2\n",
            HashVersion::V3 => b"sluice-ledger/v3\n",
        }
    }
}

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first row of every chain.
pub const GENESIS_HASH: Hash = [0; 32];

/// One stored row: the column values exactly as written to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// The gateway node whose chain holds the row.
    pub node_id: String,
    /// Position in the node's chain, from 1 without gaps.
    pub seq: i64,
    /// Unique id assigned when the record entered the ledger (idempotent replay key).
    pub record_id: String,
    /// See [`UsageRecord::time_us`].
    pub time_us: i64,
    /// See [`UsageRecord::request_id`].
    pub request_id: String,
    /// See [`UsageRecord::tenant`].
    pub tenant: Option<String>,
    /// See [`UsageRecord::key_id`].
    pub key_id: Option<String>,
    /// See [`UsageRecord::model`].
    pub model: String,
    /// See [`UsageRecord::provider`].
    pub provider: String,
    /// See [`UsageRecord::upstream_model`].
    pub upstream_model: String,
    /// Prompt tokens (saturated at `i64::MAX`).
    pub prompt_tokens: i64,
    /// Completion tokens (saturated at `i64::MAX`).
    pub completion_tokens: i64,
    /// Cached prompt tokens (saturated at `i64::MAX`).
    pub cached_prompt_tokens: i64,
    /// Prompt tokens written to the provider's cache (saturated at
    /// `i64::MAX`). Hashed from version 3 on; 0 in older rows.
    pub cache_write_tokens: i64,
    /// See [`UsageRecord::usage_source`].
    pub usage_source: UsageSource,
    /// See [`UsageRecord::cost_micros`].
    pub cost_micros: i64,
    /// See [`UsageRecord::cost_picos`]. Hashed from version 2 on.
    pub cost_picos: i64,
    /// See [`UsageRecord::priced`].
    pub priced: bool,
    /// Milliseconds (saturated at `i64::MAX`).
    pub latency_ms: i64,
    /// Milliseconds (saturated at `i64::MAX`).
    pub ttft_ms: Option<i64>,
    /// See [`UsageRecord::http_status`].
    pub http_status: i64,
    /// See [`UsageRecord::stream`].
    pub stream: bool,
    /// See [`UsageRecord::end_state`].
    pub end_state: EndState,
    /// The encoding the row's hash was computed with.
    pub hash_version: HashVersion,
}

/// Text as stored: NUL characters (legal in JSON strings, refused by
/// PostgreSQL `TEXT`) become U+FFFD, so no client-supplied string can make a
/// batch unwritable on one backend and not the other.
fn stored_text(value: &str) -> String {
    if value.contains('\0') {
        value.replace('\0', "\u{FFFD}")
    } else {
        value.to_string()
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl LedgerRow {
    /// The row for `record` at position `seq` of `node_id`'s chain, hashed
    /// with [`HashVersion::CURRENT`]. Text fields lose NUL characters
    /// (replaced by U+FFFD); numbers above `i64::MAX` saturate.
    pub fn new(node_id: &str, seq: i64, record_id: &str, record: &UsageRecord) -> LedgerRow {
        LedgerRow {
            node_id: node_id.to_string(),
            seq,
            record_id: record_id.to_string(),
            time_us: record.time_us,
            request_id: stored_text(&record.request_id),
            tenant: record.tenant.as_deref().map(stored_text),
            key_id: record.key_id.as_deref().map(stored_text),
            model: stored_text(&record.model),
            provider: stored_text(&record.provider),
            upstream_model: stored_text(&record.upstream_model),
            prompt_tokens: saturating_i64(record.usage.prompt_tokens),
            completion_tokens: saturating_i64(record.usage.completion_tokens),
            cached_prompt_tokens: saturating_i64(record.usage.cached_prompt_tokens),
            cache_write_tokens: saturating_i64(record.usage.cache_write_tokens),
            usage_source: record.usage_source,
            cost_micros: record.cost_micros,
            cost_picos: record.cost_picos,
            priced: record.priced,
            latency_ms: saturating_i64(record.latency_ms),
            ttft_ms: record.ttft_ms.map(saturating_i64),
            http_status: i64::from(record.http_status),
            stream: record.stream,
            end_state: record.end_state,
            hash_version: HashVersion::CURRENT,
        }
    }

    /// The canonical encoding of this row after `prev_hash`, in the row's
    /// own [`HashVersion`] (module docs).
    pub fn canonical_bytes(&self, prev_hash: &Hash) -> Vec<u8> {
        let mut out = Encoder(Vec::with_capacity(256));
        out.0.extend_from_slice(self.hash_version.tag());
        out.0.extend_from_slice(prev_hash);
        out.text(&self.node_id);
        out.int(self.seq);
        out.text(&self.record_id);
        out.int(self.time_us);
        out.text(&self.request_id);
        out.optional_text(self.tenant.as_deref());
        out.optional_text(self.key_id.as_deref());
        out.text(&self.model);
        out.text(&self.provider);
        out.text(&self.upstream_model);
        out.int(self.prompt_tokens);
        out.int(self.completion_tokens);
        out.int(self.cached_prompt_tokens);
        match self.hash_version {
            HashVersion::V1 | HashVersion::V2 => {}
            HashVersion::V3 => out.int(self.cache_write_tokens),
        }
        out.text(self.usage_source.as_str());
        out.int(self.cost_micros);
        match self.hash_version {
            HashVersion::V1 => {}
            HashVersion::V2 | HashVersion::V3 => out.int(self.cost_picos),
        }
        out.int(i64::from(self.priced));
        out.int(self.latency_ms);
        out.optional_int(self.ttft_ms);
        out.int(self.http_status);
        out.int(i64::from(self.stream));
        out.text(self.end_state.as_str());
        out.0
    }

    /// `SHA-256(canonical_bytes(prev_hash))`: the row's own hash.
    pub fn hash(&self, prev_hash: &Hash) -> Hash {
        Sha256::digest(self.canonical_bytes(prev_hash)).into()
    }

    /// Whether the columns the row's encoding leaves out still hold what
    /// they were derived as ([`LedgerRow::unhashed_mismatch`] finds none).
    pub fn unhashed_columns_match(&self) -> bool {
        self.unhashed_mismatch().is_none()
    }

    /// The first column the row's encoding leaves out that no longer holds
    /// what it was derived as, described for a report; `None` when all do.
    /// A version 1 row's `cost_picos` must be `cost_micros x 1,000,000`, as
    /// migration `0003` wrote it; a version 1 or 2 row's
    /// `cache_write_tokens` must be 0, as migration `0005` wrote it. Always
    /// `None` for version 3, which hashes every column.
    pub fn unhashed_mismatch(&self) -> Option<&'static str> {
        let picos_derived = self.cost_picos == micros_to_picos(self.cost_micros);
        let writes_zero = self.cache_write_tokens == 0;
        match self.hash_version {
            HashVersion::V1 if !picos_derived => {
                Some("cost_picos of a version 1 row is not cost_micros x 1000000")
            }
            HashVersion::V1 | HashVersion::V2 if !writes_zero => {
                Some("cache_write_tokens of a version 1 or 2 row is not 0")
            }
            HashVersion::V1 | HashVersion::V2 | HashVersion::V3 => None,
        }
    }
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn int(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn text(&mut self, value: &str) {
        // Lengths over 4 GiB cannot occur: a row that large is refused by both databases.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value.as_bytes());
    }

    fn optional_text(&mut self, value: Option<&str>) {
        match value {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.text(text);
            }
        }
    }

    fn optional_int(&mut self, value: Option<i64>) {
        match value {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(1);
                self.int(n);
            }
        }
    }
}

/// Lower-case hex, as hashes are stored.
pub fn hash_to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// Parses 64 hex characters; `None` for anything else.
pub fn hash_from_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TokenUsage;

    fn sample_row() -> LedgerRow {
        LedgerRow::new("node-a", 1, "rec-1", &sample_record())
    }

    fn sample_record() -> UsageRecord {
        UsageRecord {
            time_us: 1_700_000_000_000_000,
            request_id: "req-1".into(),
            tenant: Some("acme".into()),
            key_id: None,
            model: "gpt-4o".into(),
            provider: "openai".into(),
            upstream_model: "gpt-4o-2024-08-06".into(),
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 20,
                cached_prompt_tokens: 0,
                cache_write_tokens: 0,
            },
            usage_source: UsageSource::Reported,
            cost_micros: 225,
            cost_picos: 225_000_000,
            priced: true,
            latency_ms: 150,
            ttft_ms: Some(40),
            http_status: 200,
            stream: true,
            end_state: EndState::Completed,
        }
    }

    fn v1_row() -> LedgerRow {
        LedgerRow {
            hash_version: HashVersion::V1,
            ..sample_row()
        }
    }

    fn v2_row() -> LedgerRow {
        LedgerRow {
            hash_version: HashVersion::V2,
            ..sample_row()
        }
    }

    #[test]
    fn encoding_layout_is_stable() {
        let row = v1_row();
        let bytes = row.canonical_bytes(&GENESIS_HASH);
        assert_eq!(&bytes[..17], b"sluice-ledger/v1\n");
        assert_eq!(&bytes[17..49], &[0u8; 32]);
        // node_id: length 6, "node-a"; then seq 1 as 8 bytes.
        assert_eq!(&bytes[49..53], &[0, 0, 0, 6]);
        assert_eq!(&bytes[53..59], b"node-a");
        assert_eq!(&bytes[59..67], &1i64.to_be_bytes());
        // Pinned digests: changing an encoding must be a deliberate, versioned
        // act. The v1 and v2 digests are the ones rows written before v2 and
        // v3 carry.
        assert_eq!(
            hash_to_hex(&row.hash(&GENESIS_HASH)),
            PINNED_SAMPLE_HASH_V1,
            "canonical encoding v1 changed"
        );
        assert_eq!(
            hash_to_hex(&v2_row().hash(&GENESIS_HASH)),
            PINNED_SAMPLE_HASH_V2,
            "canonical encoding v2 changed"
        );
        let v3 = LedgerRow {
            cache_write_tokens: 3,
            ..sample_row()
        };
        assert_eq!(
            hash_to_hex(&v3.hash(&GENESIS_HASH)),
            PINNED_SAMPLE_HASH_V3,
            "canonical encoding v3 changed"
        );
    }

    const PINNED_SAMPLE_HASH_V1: &str =
        "789f7891d1d5522a3317a4ec5fbe96dbac4628a177408cdb71796d3a5a61ca55";
    const PINNED_SAMPLE_HASH_V2: &str =
        "cf3a25b0a37ef4bfe449cb25b1fc0df1d16e8a4c0f1fb4e9d01da3d6b34eb42f";
    const PINNED_SAMPLE_HASH_V3: &str =
        "dc647c23314cefc948562ebe5c78a8649ff202e03987e182c2f53c7fa95e0acb";

    #[test]
    fn v2_is_v1_with_its_tag_and_cost_picos_after_cost_micros() {
        let v1 = v1_row().canonical_bytes(&GENESIS_HASH);
        let v2 = v2_row().canonical_bytes(&GENESIS_HASH);
        assert_eq!(&v2[..17], b"sluice-ledger/v2\n");
        // cost_micros is followed by priced (int) ... end_state; everything
        // after it is 8 + 8 + 1 + 8 + 8 + 8 + (4 + 9) bytes = 54.
        let tail = 54;
        let cut = v1.len() - tail;
        assert_eq!(&v1[cut - 8..cut], &225i64.to_be_bytes(), "cost_micros");
        assert_eq!(&v2[17..cut], &v1[17..cut]);
        assert_eq!(&v2[cut..cut + 8], &225_000_000i64.to_be_bytes());
        assert_eq!(&v2[cut + 8..], &v1[cut..]);
    }

    #[test]
    fn v3_is_v2_with_its_tag_and_cache_write_tokens_after_cached_prompt_tokens() {
        let row = LedgerRow {
            cache_write_tokens: 7,
            ..sample_row()
        };
        assert_eq!(row.hash_version, HashVersion::CURRENT);
        let v2 = LedgerRow {
            hash_version: HashVersion::V2,
            ..row.clone()
        }
        .canonical_bytes(&GENESIS_HASH);
        let v3 = row.canonical_bytes(&GENESIS_HASH);
        assert_eq!(&v3[..17], b"sluice-ledger/v3\n");
        // cached_prompt_tokens is followed by usage_source (4 + 8 bytes),
        // cost_micros, cost_picos, then v2's 54-byte tail: 82 bytes.
        let cut = v2.len() - 82;
        assert_eq!(
            &v2[cut - 8..cut],
            &0i64.to_be_bytes(),
            "cached_prompt_tokens"
        );
        assert_eq!(&v3[17..cut], &v2[17..cut]);
        assert_eq!(&v3[cut..cut + 8], &7i64.to_be_bytes());
        assert_eq!(&v3[cut + 8..], &v2[cut..]);
    }

    #[test]
    fn version_numbers_round_trip() {
        for version in [HashVersion::V1, HashVersion::V2, HashVersion::V3] {
            assert_eq!(HashVersion::from_number(version.number()), Some(version));
        }
        assert_eq!(HashVersion::from_number(0), None);
        assert_eq!(HashVersion::from_number(4), None);
    }

    #[test]
    fn v1_rows_leave_cost_picos_to_the_derivation_check() {
        let row = v1_row();
        assert!(row.unhashed_columns_match());
        let edited = LedgerRow {
            cost_picos: row.cost_picos - 1,
            ..row.clone()
        };
        assert_eq!(edited.hash(&GENESIS_HASH), row.hash(&GENESIS_HASH));
        assert!(!edited.unhashed_columns_match());
        // A v2 row hashes it instead.
        let v2 = LedgerRow {
            cost_picos: 1,
            ..sample_row()
        };
        assert!(v2.unhashed_columns_match());
        assert_ne!(v2.hash(&GENESIS_HASH), sample_row().hash(&GENESIS_HASH));
    }

    #[test]
    fn rows_before_v3_leave_cache_write_tokens_to_the_zero_check() {
        for old in [v1_row(), v2_row()] {
            assert_eq!(old.unhashed_mismatch(), None);
            let edited = LedgerRow {
                cache_write_tokens: 1,
                ..old.clone()
            };
            assert_eq!(edited.hash(&GENESIS_HASH), old.hash(&GENESIS_HASH));
            assert_eq!(
                edited.unhashed_mismatch(),
                Some("cache_write_tokens of a version 1 or 2 row is not 0")
            );
        }
        // A v1 row's cost_picos is named first.
        let both = LedgerRow {
            cache_write_tokens: 1,
            cost_picos: 0,
            ..v1_row()
        };
        assert!(both.unhashed_mismatch().unwrap().contains("cost_picos"));
    }

    #[test]
    fn tampering_cache_write_tokens_of_a_v3_row_changes_its_hash() {
        let row = LedgerRow {
            cache_write_tokens: 2_000,
            ..sample_row()
        };
        assert_eq!(row.hash_version, HashVersion::V3);
        let tampered = LedgerRow {
            cache_write_tokens: 0,
            ..row.clone()
        };
        assert_ne!(tampered.hash(&GENESIS_HASH), row.hash(&GENESIS_HASH));
        // v3 hashes every column: nothing is left to the derivation checks.
        assert_eq!(tampered.unhashed_mismatch(), None);
    }

    #[test]
    fn every_column_and_the_link_change_the_hash() {
        let row = sample_row();
        let base = row.hash(&GENESIS_HASH);
        let mut other_prev = GENESIS_HASH;
        other_prev[31] = 1;
        assert_ne!(row.hash(&other_prev), base);
        let edits: &[fn(&mut LedgerRow)] = &[
            |r| r.node_id.push('x'),
            |r| r.seq += 1,
            |r| r.record_id.push('x'),
            |r| r.time_us += 1,
            |r| r.request_id.push('x'),
            |r| r.tenant = None,
            |r| r.key_id = Some(String::new()),
            |r| r.model.push('x'),
            |r| r.provider.push('x'),
            |r| r.upstream_model.push('x'),
            |r| r.prompt_tokens += 1,
            |r| r.completion_tokens += 1,
            |r| r.cached_prompt_tokens += 1,
            |r| r.cache_write_tokens += 1,
            |r| r.usage_source = UsageSource::Counted,
            |r| r.cost_micros += 1,
            |r| r.cost_picos += 1,
            |r| r.hash_version = HashVersion::V1,
            |r| r.hash_version = HashVersion::V2,
            |r| r.priced = false,
            |r| r.latency_ms += 1,
            |r| r.ttft_ms = None,
            |r| r.http_status = 500,
            |r| r.stream = false,
            |r| r.end_state = EndState::Broken,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut edited = row.clone();
            edit(&mut edited);
            assert_ne!(
                edited.hash(&GENESIS_HASH),
                base,
                "edit {i} not covered by the hash"
            );
        }
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        // "ab" + "c" and "a" + "bc" must not encode the same.
        let mut one = sample_row();
        one.model = "ab".into();
        one.provider = "c".into();
        let mut two = sample_row();
        two.model = "a".into();
        two.provider = "bc".into();
        assert_ne!(
            one.canonical_bytes(&GENESIS_HASH),
            two.canonical_bytes(&GENESIS_HASH)
        );
    }

    #[test]
    fn nul_characters_are_replaced() {
        let mut record = UsageRecord {
            model: "gpt\0-4o".into(),
            tenant: Some("a\0".into()),
            ..sample_record()
        };
        let row = LedgerRow::new("n", 1, "r", &record);
        assert_eq!(row.model, "gpt\u{FFFD}-4o");
        assert_eq!(row.tenant.as_deref(), Some("a\u{FFFD}"));
        record.model = "gpt-4o".into();
        assert_eq!(LedgerRow::new("n", 1, "r", &record).model, "gpt-4o");
    }

    #[test]
    fn hex_round_trips() {
        let hash = sample_row().hash(&GENESIS_HASH);
        let hex = hash_to_hex(&hash);
        assert_eq!(hex.len(), 64);
        assert_eq!(hash_from_hex(&hex), Some(hash));
        assert_eq!(hash_from_hex("zz"), None);
        assert_eq!(hash_from_hex(&"g".repeat(64)), None);
    }
}
