//! Prices and costs: exact arithmetic checked by hand.
use super::*;

fn usage(prompt: u64, cached: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: 0,
    }
}

/// `usage` with `written` of the prompt written to the cache.
fn usage_writing(prompt: u64, cached: u64, written: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        cache_write_tokens: written,
        ..usage(prompt, cached, completion)
    }
}

/// A price whose cache writes cost plain input.
fn price(input: &str, cached: &str, output: &str) -> Price {
    price_writing(input, cached, input, output)
}

fn price_writing(input: &str, cached: &str, write: &str, output: &str) -> Price {
    Price {
        input: UsdPerMillion::parse(input).unwrap(),
        cached_input: UsdPerMillion::parse(cached).unwrap(),
        cache_write: UsdPerMillion::parse(write).unwrap(),
        output: UsdPerMillion::parse(output).unwrap(),
        as_of: None,
    }
}

#[test]
fn decimal_prices_parse_exactly() {
    assert_eq!(UsdPerMillion::parse("2.50").unwrap().micros(), 2_500_000);
    assert_eq!(UsdPerMillion::parse("0.0375").unwrap().micros(), 37_500);
    assert_eq!(UsdPerMillion::parse("15").unwrap().micros(), 15_000_000);
    assert_eq!(UsdPerMillion::parse("0.000001").unwrap().micros(), 1);
    assert_eq!(
        UsdPerMillion::parse("1.1000000").unwrap().micros(),
        1_100_000
    );
    for bad in ["", ".5", "-1", "1.0000001", "1e3", "abc", "1.2.3"] {
        assert!(UsdPerMillion::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(UsdPerMillion::from_micros(37_500).to_string(), "0.0375");
    assert_eq!(UsdPerMillion::from_micros(10_000_000).to_string(), "10");
}

#[test]
fn yaml_floats_are_read_as_written() {
    let o: PriceOverride = serde_yaml_ng::from_str(
        "{model: m, input: 0.075, output: 2, cached_input: \"0.01875\", cache_write: 0.09375}",
    )
    .unwrap();
    assert_eq!(o.input.micros(), 75_000);
    assert_eq!(o.output.micros(), 2_000_000);
    assert_eq!(o.cached_input.unwrap().micros(), 18_750);
    assert_eq!(o.cache_write.unwrap().micros(), 93_750);
    assert!(
        serde_yaml_ng::from_str::<PriceOverride>("{model: m, input: 1, output: 1, x: 1}").is_err()
    );
}

#[test]
fn cost_bills_cached_and_uncached_prompt_separately() {
    // gpt-4o: 2.50 in, 1.25 cached, 10.00 out.
    let p = price("2.50", "1.25", "10.00");
    // 1000 uncached * 2.5 + 1000 cached * 1.25 + 500 * 10 = 2500 + 1250 + 5000 = 8750 micros.
    assert_eq!(cost_micros(&p, &usage(2000, 1000, 500)), 8750);
    // A million of everything, no cache: 2.50 + 10.00 dollars.
    assert_eq!(cost_micros(&p, &usage(1_000_000, 0, 1_000_000)), 12_500_000);
    // cached > prompt is clamped: the whole prompt is cached.
    assert_eq!(
        cost_micros(&p, &usage(10, 50, 0)),
        cost_micros(&p, &usage(10, 10, 0))
    );
    assert_eq!(cost_micros(&p, &TokenUsage::default()), 0);
}

#[test]
fn cost_bills_cache_reads_and_writes_at_their_own_rates() {
    // claude-sonnet-4: 3.00 in, 0.30 cache read, 3.75 cache write, 15.00 out.
    let p = price_writing("3.00", "0.30", "3.75", "15.00");
    // 10,000 prompt tokens: 6,000 read, 3,000 written, 1,000 plain; 700 out.
    // Picos (= micros per million x tokens):
    //   1,000 x 3,000,000  =  3,000,000,000
    //   6,000 x   300,000  =  1,800,000,000
    //   3,000 x 3,750,000  = 11,250,000,000
    //     700 x 15,000,000 = 10,500,000,000
    //                 sum  = 26,550,000,000 (= 26,550 micros)
    let u = usage_writing(10_000, 6_000, 3_000, 700);
    assert_eq!(cost_picos(&p, &u), 26_550_000_000);
    assert_eq!(cost_micros(&p, &u), 26_550);
    // An odd count: 7 written tokens at 3.75 = 26.25 micros -> 26,250,000
    // picos exactly, plus 1 plain token (3,000,000): 29.25 micros -> 29.
    let u = usage_writing(8, 0, 7, 0);
    assert_eq!(cost_picos(&p, &u), 29_250_000);
    assert_eq!(cost_micros(&p, &u), 29);
    // Without a cache_write rate, writes cost plain input.
    let plain = price("3.00", "0.30", "15.00");
    assert_eq!(
        cost_picos(&plain, &usage_writing(10_000, 6_000, 3_000, 700)),
        cost_picos(&plain, &usage(10_000, 6_000, 700))
    );
}

#[test]
fn cache_reads_and_writes_never_bill_more_than_the_prompt() {
    let p = price_writing("3.00", "0.30", "3.75", "15.00");
    // Reads are taken first; writes get at most what is left.
    assert_eq!(
        cost_picos(&p, &usage_writing(10, 6, 50, 0)),
        cost_picos(&p, &usage_writing(10, 6, 4, 0))
    );
    assert_eq!(
        cost_picos(&p, &usage_writing(10, 6, 4, 0)),
        6 * 300_000 + 4 * 3_750_000
    );
    // Reads alone past the prompt leave no room for writes.
    assert_eq!(
        cost_picos(&p, &usage_writing(10, 50, 50, 0)),
        cost_picos(&p, &usage(10, 10, 0))
    );
    // Writes alone past the prompt: the whole prompt is written.
    assert_eq!(cost_picos(&p, &usage_writing(10, 0, 50, 0)), 10 * 3_750_000);
    let most = usage_writing(u64::MAX, u64::MAX / 3, u64::MAX, u64::MAX);
    assert_eq!(cost_picos(&p, &most), i64::MAX);
}

#[test]
fn cost_rounds_once_half_up() {
    let p = price("0.15", "0.075", "0.60");
    // 1 prompt token is 0.15 micros -> 0; 4 are 0.6 -> 1; 10 are 1.5 -> 2 (half up).
    assert_eq!(cost_micros(&p, &usage(1, 0, 0)), 0);
    assert_eq!(cost_micros(&p, &usage(4, 0, 0)), 1);
    assert_eq!(cost_micros(&p, &usage(10, 0, 0)), 2);
    // Parts are summed before rounding: 3 uncached (0.45) + 3 cached
    // (0.225) = 0.675 -> 1, where rounding each part would give 0 + 0.
    assert_eq!(cost_micros(&p, &usage(6, 3, 0)), 1);
}

#[test]
fn cost_saturates_instead_of_overflowing() {
    let p = price("1000000", "1000000", "1000000");
    assert_eq!(cost_micros(&p, &usage(u64::MAX, 0, u64::MAX)), i64::MAX);
    assert_eq!(cost_picos(&p, &usage(u64::MAX, 0, u64::MAX)), i64::MAX);
    let dearest = Price {
        input: UsdPerMillion::from_micros(i64::MAX),
        cached_input: UsdPerMillion::from_micros(i64::MAX),
        cache_write: UsdPerMillion::from_micros(i64::MAX),
        output: UsdPerMillion::from_micros(i64::MAX),
        as_of: None,
    };
    let most = usage(u64::MAX, u64::MAX / 2, u64::MAX);
    assert_eq!(cost_micros(&dearest, &most), i64::MAX);
}

#[test]
fn picos_are_exact_and_micros_their_rounding() {
    // $0.39 per million = 390,000 pico-dollars per token.
    let p = price("0.39", "0.39", "0.39");
    assert_eq!(cost_picos(&p, &usage(26, 0, 0)), 10_140_000);
    assert_eq!(cost_micros(&p, &usage(26, 0, 0)), 10);
    let p = price("2.50", "1.25", "10.00");
    let u = usage(2001, 1000, 501);
    assert_eq!(
        cost_picos(&p, &u),
        2_502_500_000 + 1_250_000_000 + 5_010_000_000
    );
    assert_eq!(
        cost_micros(&p, &u),
        round_picos_to_micros(cost_picos(&p, &u).into())
    );
    let table = PriceTable::from_yaml("models:\n  m: {input: \"0.39\", output: \"1\"}\n").unwrap();
    let cost = table.cost("m", &usage(26, 0, 1));
    assert_eq!((cost.picos, cost.micros), (11_140_000, 11));
}

#[test]
fn rounding_picos_to_micros_is_half_up() {
    assert_eq!(round_picos_to_micros(0), 0);
    assert_eq!(round_picos_to_micros(499_999), 0);
    assert_eq!(round_picos_to_micros(500_000), 1);
    assert_eq!(round_picos_to_micros(1_499_999), 1);
    assert_eq!(round_picos_to_micros(10_140_000_000), 10_140);
    assert_eq!(round_picos_to_micros(-500_000), 0);
    assert_eq!(round_picos_to_micros(-500_001), -1);
    assert_eq!(round_picos_to_micros(i128::MAX), i64::MAX);
    assert_eq!(round_picos_to_micros(i128::MIN), i64::MIN);
    assert_eq!(micros_to_picos(10), 10_000_000);
    assert_eq!(micros_to_picos(i64::MAX / 1000), i64::MAX);
    assert_eq!(micros_to_picos(i64::MIN / 1000), i64::MIN);
}

#[test]
fn embedded_table_is_complete_and_dated() {
    let table = PriceTable::embedded().unwrap();
    assert!(table.len() >= 40, "only {} models", table.len());
    for (model, price) in table.iter() {
        assert!(price.as_of.is_some(), "{model} has no as_of date");
        assert!(price.input.micros() > 0, "{model} has a zero input price");
        assert!(
            price.cached_input <= price.input,
            "{model}: cache dearer than input"
        );
        assert!(
            price.cache_write >= price.input,
            "{model}: cache writes cheaper than input"
        );
        if !model.starts_with("claude-") {
            assert_eq!(
                price.cache_write, price.input,
                "{model}: unexpected cache_write"
            );
        }
    }
    // Anthropic's 5-minute cache writes: 1.25x input, as its price page
    // lists them (Claude 3 Haiku's $0.3125 is listed rounded, as $0.30).
    for (model, write) in [
        ("claude-opus-4-1", "18.75"),
        ("claude-opus-4", "18.75"),
        ("claude-sonnet-4", "3.75"),
        ("claude-3-7-sonnet", "3.75"),
        ("claude-3-5-sonnet", "3.75"),
        ("claude-3-5-haiku", "1.00"),
        ("claude-3-opus", "18.75"),
        ("claude-3-haiku", "0.30"),
    ] {
        let price = table.lookup(model).unwrap();
        assert_eq!(
            price.cache_write,
            UsdPerMillion::parse(write).unwrap(),
            "{model}"
        );
    }
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3",
        "claude-sonnet-4",
        "gemini-2.5-pro",
        "mistral-large",
        "deepseek-chat",
    ] {
        assert!(table.lookup(model).is_some(), "{model} missing");
    }
}

#[test]
fn lookup_normalises_names() {
    let table = PriceTable::embedded().unwrap();
    let gpt4o = table.lookup("gpt-4o").unwrap().clone();
    assert_eq!(table.lookup("GPT-4o ").unwrap(), &gpt4o);
    assert_eq!(table.lookup("openai/gpt-4o").unwrap(), &gpt4o);
    assert_eq!(table.lookup("gpt-4o-2024-08-06").unwrap(), &gpt4o);
    // A snapshot with its own entry keeps its own price.
    assert_eq!(
        table.lookup("gpt-4o-2024-05-13").unwrap().input.micros(),
        5_000_000
    );
    let sonnet = table.lookup("claude-3-5-sonnet").unwrap().clone();
    assert_eq!(table.lookup("claude-3-5-sonnet-20241022").unwrap(), &sonnet);
    assert_eq!(table.lookup("claude-3-5-sonnet@20240620").unwrap(), &sonnet);
    assert_eq!(table.lookup("claude-3-5-sonnet-latest").unwrap(), &sonnet);
    assert!(table.lookup("models/gemini-1.5-pro-002").is_some());
    assert!(table.lookup("mistral-large-2411").is_some());
    assert!(table.lookup("gpt-4-0613").is_some());
    // Only one suffix is stripped, and unknown models stay unknown.
    assert!(table.lookup("gpt-4o-2024-08-06-latest").is_none());
    assert!(table.lookup("llama-3-70b").is_none());
    assert!(table.lookup("").is_none());
}

#[test]
fn unknown_models_are_unpriced_not_free() {
    let table = PriceTable::embedded().unwrap();
    let cost = table.cost("my-private-model", &usage(100, 0, 100));
    assert_eq!(
        cost,
        Cost {
            micros: 0,
            picos: 0,
            priced: false
        }
    );
    assert!(table.cost("gpt-4o", &usage(100, 0, 100)).priced);
}

#[test]
fn overrides_add_and_replace_and_tenants_inherit() {
    let global = PriceTable::embedded().unwrap();
    let overrides: Vec<PriceOverride> = serde_yaml_ng::from_str(
        "- { model: My-Model, input: \"1\", output: \"2\" }\n- { model: gpt-4o, input: \"1\", output: \"1\", as_of: \"2025-07-01\" }",
    )
    .unwrap();
    let table = global.with_overrides(&overrides).unwrap();
    let mine = table.lookup("my-model").unwrap();
    assert_eq!(mine.cached_input, mine.input, "cached defaults to input");
    assert_eq!(
        mine.cache_write, mine.input,
        "cache_write defaults to input"
    );
    assert_eq!(table.lookup("gpt-4o").unwrap().output.micros(), 1_000_000);
    assert_eq!(global.lookup("gpt-4o").unwrap().output.micros(), 10_000_000);

    let mut book = PriceBook::new(global);
    book.set_tenant_overrides("acme", &overrides).unwrap();
    let u = usage(1_000_000, 0, 0);
    assert_eq!(book.cost(Some("acme"), "gpt-4o", &u).micros, 1_000_000);
    assert_eq!(book.cost(Some("other"), "gpt-4o", &u).micros, 2_500_000);
    assert_eq!(book.cost(None, "gpt-4o", &u).micros, 2_500_000);
    assert!(
        book.cost(Some("acme"), "claude-3-haiku", &u).priced,
        "tenant inherits global"
    );
    assert!(!book.cost(None, "my-model", &u).priced);

    let bad = PriceOverride {
        as_of: Some("July".into()),
        ..overrides[0].clone()
    };
    assert!(PriceTable::default().with_overrides(&[bad]).is_err());
}

#[test]
fn version_suffixes() {
    assert_eq!(strip_version_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(
        strip_version_suffix("claude-opus-4-20250514"),
        Some("claude-opus-4")
    );
    assert_eq!(
        strip_version_suffix("gemini-1.5-flash-001"),
        Some("gemini-1.5-flash")
    );
    assert_eq!(strip_version_suffix("gpt-4-32k"), None);
    assert_eq!(strip_version_suffix("claude-opus-4-1"), None);
    assert_eq!(strip_version_suffix("2024"), None);
}
