-- Exact costs: `cost_picos` holds a record's cost in pico-dollars (1e-12 USD,
-- exact: tokens x price in micro-dollars per million tokens), and reports sum
-- it instead of the per-record rounded `cost_micros`. `hash_version` names the
-- canonical encoding each row's hash was computed with (ledger/src/chain.rs):
-- rows already here keep version 1, which does not cover `cost_picos`; new
-- rows are written with version 2, which does.
--
-- Existing rows were priced in whole micro-dollars, so their exact cost is
-- unknown: they get `cost_micros x 1,000,000`, saturating at the BIGINT bounds
-- as the Rust side does (`micros_to_picos`); `verify` checks that a version 1
-- row still holds exactly that.
ALTER TABLE usage_records ADD COLUMN cost_picos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN hash_version BIGINT NOT NULL DEFAULT 1;
UPDATE usage_records SET cost_picos = CASE
    WHEN cost_micros > 9223372036854 THEN 9223372036854775807
    WHEN cost_micros < -9223372036854 THEN -9223372036854775807 - 1
    ELSE cost_micros * 1000000
END;
-- The defaults only served the rows above. Without them, a node still running
-- an older sluice (several nodes share one PostgreSQL database) cannot insert
-- rows with a zero cost_picos: its writes fail and its records wait in its
-- spool, which the upgraded binary replays with their cost_picos derived.
ALTER TABLE usage_records ALTER COLUMN cost_picos DROP DEFAULT;
ALTER TABLE usage_records ALTER COLUMN hash_version DROP DEFAULT;
