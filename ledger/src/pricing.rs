//! Prices per model and the cost of a request, in integer micro-dollars.
//!
//! Start at [`PriceTable::embedded`] (the table in `ledger/data/prices.yaml`),
//! layer config overrides on it with [`PriceTable::with_overrides`], and
//! price a request with [`PriceTable::cost`]. [`PriceBook`] adds per-tenant
//! tables on top of the global one.
//!
//! Money is never a float: prices are held as micro-dollars per million
//! tokens ([`UsdPerMillion`]), which is exactly pico-dollars (1e-12 USD) per
//! token, so a request's cost is an exact integer number of pico-dollars
//! ([`cost_picos`]). Its micro-dollar value ([`cost_micros`]) is that,
//! rounded half up once; sums are taken in pico-dollars and rounded once at
//! the end ([`round_picos_to_micros`]), so they never drift.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::record::TokenUsage;
use crate::LedgerError;

/// The default table, shipped in the repository and compiled in.
const EMBEDDED_PRICES: &str = include_str!("../data/prices.yaml");

/// Pico-dollars in one micro-dollar (and micro-dollars in one dollar, and
/// tokens in one "per million" unit).
pub const PICOS_PER_MICRO: i64 = 1_000_000;

/// A price in USD per million tokens, held exactly as an integer number of
/// micro-dollars per million tokens (so `"2.50"` is `2_500_000`). Prices with
/// more than six decimal places cannot be represented and are refused.
///
/// Deserialises from a decimal string (`"0.075"`, the form the data file
/// uses), an integer, or a YAML/JSON float; a float is read through its
/// shortest round-trip text (`0.075` -> `"0.075"`), so the number written in
/// the config is the number used, never a binary approximation of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct UsdPerMillion(i64);

impl UsdPerMillion {
    /// A price of `micros` micro-dollars per million tokens.
    pub const fn from_micros(micros: i64) -> Self {
        UsdPerMillion(micros)
    }

    /// The price in micro-dollars per million tokens (= pico-dollars per token).
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parses a non-negative decimal such as `"2.50"` or `"0.0375"`.
    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        let invalid = || {
            LedgerError::Pricing(format!(
                "price {text:?} is not a non-negative decimal with at most 6 decimal places"
            ))
        };
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(invalid());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 6 {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let fraction_micros: i64 = if fraction.is_empty() {
            0
        } else {
            let padded = format!("{fraction:0<6}");
            padded.parse().map_err(|_| invalid())?
        };
        whole
            .checked_mul(1_000_000)
            .and_then(|micros| micros.checked_add(fraction_micros))
            .map(UsdPerMillion)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for UsdPerMillion {
    /// Writes the shortest exact decimal: `2.5`, `0.0375`, `10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let fraction = self.0 % 1_000_000;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl<'de> Deserialize<'de> for UsdPerMillion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Integer(u64),
            Float(f64),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Integer(n) => n.to_string(),
            // `Display` for f64 prints the shortest text that reads back as the
            // same float, i.e. what the user wrote (up to 15-17 digits).
            Written::Float(x) => x.to_string(),
        };
        UsdPerMillion::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The price of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Prompt tokens neither read from nor written to the provider's cache.
    pub input: UsdPerMillion,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: UsdPerMillion,
    /// Prompt tokens written to the provider's cache (Anthropic bills its
    /// 5-minute cache writes at 1.25x `input`). `input` when the table or
    /// override gives none: an upstream that does not cache is billed plainly.
    pub cache_write: UsdPerMillion,
    /// Completion tokens.
    pub output: UsdPerMillion,
    /// When the price was taken (`YYYY-MM-DD`); `None` for overrides that gave no date.
    pub as_of: Option<String>,
}

/// One price as written in the data file or in the config, before it is
/// attached to a model name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: UsdPerMillion,
    #[serde(default)]
    cached_input: Option<UsdPerMillion>,
    #[serde(default)]
    cache_write: Option<UsdPerMillion>,
    output: UsdPerMillion,
    #[serde(default)]
    as_of: Option<String>,
}

/// The shape of `data/prices.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    models: HashMap<String, PriceEntry>,
}

/// A price from the config that adds a model to a table or replaces its
/// price. Deserialisable so the config crate can embed a list of them
/// (globally, and per tenant for [`PriceBook`]).
///
/// ```yaml
/// - { model: my-finetune, input: "3.00", output: "12.00", as_of: "2025-07-01" }
/// - { model: my-claude, input: "3.00", cached_input: "0.30", cache_write: "3.75", output: "15.00" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    /// The model name, matched case-insensitively like table keys.
    pub model: String,
    /// USD per million uncached prompt tokens.
    pub input: UsdPerMillion,
    /// USD per million cached prompt tokens; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<UsdPerMillion>,
    /// USD per million prompt tokens written to the provider's cache;
    /// defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<UsdPerMillion>,
    /// USD per million completion tokens.
    pub output: UsdPerMillion,
    /// When the price was taken (`YYYY-MM-DD`), if known.
    #[serde(default)]
    pub as_of: Option<String>,
}

/// What a request cost, or that nobody knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Micro-dollars, [`Cost::picos`] rounded half up; 0 when `priced` is false.
    pub micros: i64,
    /// Pico-dollars (1e-12 USD), exact ([`cost_picos`]); 0 when `priced` is false.
    pub picos: i64,
    /// Whether a price was found for the model.
    pub priced: bool,
}

/// Prices by model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    /// Keyed by lower-cased model name.
    models: HashMap<String, Price>,
}

impl PriceTable {
    /// The table shipped in `ledger/data/prices.yaml` (approximate, dated per
    /// entry; see the file's header). Fails only if that file is malformed,
    /// which a unit test rules out.
    pub fn embedded() -> Result<PriceTable, LedgerError> {
        PriceTable::from_yaml(EMBEDDED_PRICES)
    }

    /// Parses a table in the format of `data/prices.yaml`.
    pub fn from_yaml(text: &str) -> Result<PriceTable, LedgerError> {
        let file: PriceFile = serde_yaml_ng::from_str(text)
            .map_err(|e| LedgerError::Pricing(format!("price table: {e}")))?;
        let mut table = PriceTable::default();
        for (model, entry) in file.models {
            table.insert(&model, entry)?;
        }
        Ok(table)
    }

    /// A copy of this table with `overrides` added or replacing entries.
    pub fn with_overrides(&self, overrides: &[PriceOverride]) -> Result<PriceTable, LedgerError> {
        let mut table = self.clone();
        for o in overrides {
            let entry = PriceEntry {
                input: o.input,
                cached_input: o.cached_input,
                cache_write: o.cache_write,
                output: o.output,
                as_of: o.as_of.clone(),
            };
            table.insert(&o.model, entry)?;
        }
        Ok(table)
    }

    fn insert(&mut self, model: &str, entry: PriceEntry) -> Result<(), LedgerError> {
        let key = model.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(LedgerError::Pricing("empty model name".into()));
        }
        if let Some(date) = &entry.as_of {
            if !is_iso_date(date) {
                return Err(LedgerError::Pricing(format!(
                    "{model}: as_of {date:?} is not a YYYY-MM-DD date"
                )));
            }
        }
        let price = Price {
            input: entry.input,
            cached_input: entry.cached_input.unwrap_or(entry.input),
            cache_write: entry.cache_write.unwrap_or(entry.input),
            output: entry.output,
            as_of: entry.as_of,
        };
        self.models.insert(key, price);
        Ok(())
    }

    /// The price of `model`, trying in order:
    ///
    /// 1. the name lower-cased and trimmed (table keys are lower-case);
    /// 2. without a provider prefix: everything up to the last `/`
    ///    (`openai/gpt-4o`, `models/gemini-1.5-pro`);
    /// 3. without one version suffix: `@anything` (Vertex, `claude-3-5-sonnet@20240620`),
    ///    `-latest`, `-YYYY-MM-DD` (`gpt-4o-2024-08-06`), `-YYYYMMDD`
    ///    (`claude-3-5-sonnet-20241022`), `-NNNN` (`gpt-4-0613`,
    ///    `mistral-large-2411`) or `-NNN` (`gemini-1.5-pro-002`).
    ///
    /// A dated snapshot with its own entry (`gpt-4o-2024-05-13`) matches in
    /// step 1 and keeps its own price. `None` means "unknown": record the
    /// request as unpriced, never as $0.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        // Keys are lower-case; most names already are, so try them as given
        // before allocating a lowered copy (this runs on every request).
        if let Some(price) = self.models.get(model) {
            return Some(price);
        }
        let lowered = model.trim().to_ascii_lowercase();
        if let Some(price) = self.models.get(&lowered) {
            return Some(price);
        }
        let unprefixed = lowered.rsplit('/').next().unwrap_or(&lowered);
        if let Some(price) = self.models.get(unprefixed) {
            return Some(price);
        }
        strip_version_suffix(unprefixed).and_then(|base| self.models.get(base))
    }

    /// Prices `usage` for `model`: [`cost_picos`] and [`cost_micros`] with
    /// the price from [`PriceTable::lookup`], or `{micros: 0, picos: 0,
    /// priced: false}` when unknown.
    pub fn cost(&self, model: &str, usage: &TokenUsage) -> Cost {
        match self.lookup(model) {
            Some(price) => Cost {
                micros: cost_micros(price, usage),
                picos: cost_picos(price, usage),
                priced: true,
            },
            None => Cost {
                micros: 0,
                picos: 0,
                priced: false,
            },
        }
    }

    /// Number of models in the table.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the table has no models.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Every (lower-cased model name, price), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.models
            .iter()
            .map(|(model, price)| (model.as_str(), price))
    }
}

/// The global table plus per-tenant tables, for deployments where some
/// tenants have negotiated prices. A tenant table is the global table with
/// that tenant's overrides on top, so it inherits every other model.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    global: PriceTable,
    tenants: HashMap<String, PriceTable>,
}

impl PriceBook {
    /// A book with only the global table.
    pub fn new(global: PriceTable) -> PriceBook {
        PriceBook {
            global,
            tenants: HashMap::new(),
        }
    }

    /// Adds (or replaces) the overrides of `tenant`.
    pub fn set_tenant_overrides(
        &mut self,
        tenant: &str,
        overrides: &[PriceOverride],
    ) -> Result<(), LedgerError> {
        let table = self.global.with_overrides(overrides)?;
        self.tenants.insert(tenant.to_string(), table);
        Ok(())
    }

    /// The table that prices `tenant`'s requests.
    pub fn table_for(&self, tenant: Option<&str>) -> &PriceTable {
        tenant
            .and_then(|t| self.tenants.get(t))
            .unwrap_or(&self.global)
    }

    /// [`PriceTable::cost`] in the tenant's table.
    pub fn cost(&self, tenant: Option<&str>, model: &str, usage: &TokenUsage) -> Cost {
        self.table_for(tenant).cost(model, usage)
    }
}

/// The exact cost of `usage` at `price`, in pico-dollars (1e-12 USD).
///
/// The prompt splits into three parts that never add up to more than
/// `prompt_tokens`: `cached = min(cached_prompt_tokens, prompt_tokens)`,
/// then `written = min(cache_write_tokens, prompt_tokens - cached)`, and the
/// rest, `prompt_tokens - cached - written`. The rest is billed at `input`,
/// the cached part at `cached_input`, the written part at `cache_write`, the
/// completion at `output`. A price in micro-dollars per million tokens is a
/// price in pico-dollars per token, so each product is exact; they are
/// summed in `i128`. Saturates at `i64::MAX` (about 9.2 million dollars, far
/// above any one request).
pub fn cost_picos(price: &Price, usage: &TokenUsage) -> i64 {
    i64::try_from(exact_picos(price, usage)).unwrap_or(i64::MAX)
}

/// The cost of `usage` at `price`, in micro-dollars: [`cost_picos`] (before
/// saturation) rounded half up once (0.5 micro-dollar rounds to 1), never per
/// component. Saturates at `i64::MAX` (about 9.2 trillion dollars). For
/// display and budgets; anything that sums costs sums pico-dollars.
pub fn cost_micros(price: &Price, usage: &TokenUsage) -> i64 {
    round_picos_to_micros(exact_picos(price, usage))
}

/// Pico-dollars to micro-dollars, rounding half up (towards +infinity on a
/// tie, for negative amounts too): the one rounding of a cost or of a sum of
/// costs. Saturates at the `i64` bounds.
pub fn round_picos_to_micros(picos: i128) -> i64 {
    let million = i128::from(PICOS_PER_MICRO);
    let micros = picos.saturating_add(million / 2).div_euclid(million);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// The pico-dollars of a cost known only in whole micro-dollars (records
/// written before costs were kept exact), saturating at the `i64` bounds.
/// Migration `0003` backfills `cost_picos` with the same rule.
pub fn micros_to_picos(micros: i64) -> i64 {
    micros.saturating_mul(PICOS_PER_MICRO)
}

fn exact_picos(price: &Price, usage: &TokenUsage) -> i128 {
    let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    let uncached = usage.prompt_tokens - cached - written;
    // Saturating: u64::MAX tokens at i64::MAX prices, three times over,
    // would pass i128::MAX.
    let part =
        |tokens: u64, price: UsdPerMillion| i128::from(tokens).saturating_mul(price.0.into());
    part(uncached, price.input)
        .saturating_add(part(cached, price.cached_input))
        .saturating_add(part(written, price.cache_write))
        .saturating_add(part(usage.completion_tokens, price.output))
}

/// Removes one trailing version or date suffix, if there is one (see
/// [`PriceTable::lookup`] for the list).
fn strip_version_suffix(model: &str) -> Option<&str> {
    if let Some((base, _)) = model.split_once('@') {
        return Some(base);
    }
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base);
    }
    // -YYYY-MM-DD
    if model.len() > 11 {
        let (base, tail) = model.split_at(model.len() - 11);
        if is_iso_date(&tail[1..]) && tail.starts_with('-') {
            return Some(base);
        }
    }
    // -YYYYMMDD, -NNNN, -NNN
    let (base, tail) = model.rsplit_once('-')?;
    let numeric = tail.bytes().all(|b| b.is_ascii_digit());
    (numeric && matches!(tail.len(), 3 | 4 | 8) && !base.is_empty()).then_some(base)
}

/// `YYYY-MM-DD` with plausible month and day numbers.
fn is_iso_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    matches!(
        (digits(0..4), digits(5..7), digits(8..10)),
        (Some(_), Some(1..=12), Some(1..=31))
    )
}

#[cfg(test)]
mod tests;
