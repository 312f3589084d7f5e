//! Conversation state for OpenAI's Responses API: the items of each stored
//! response, so a later request naming it as `previous_response_id` can be
//! answered by an upstream that keeps no state (every provider but OpenAI).
//! Rows are scoped to the tenant that made them and expire.

use crate::record::unix_micros_now;
use crate::{LedgerError, Store};
use sqlx::Row;

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
    LedgerError::database(what)
}

impl Store {
    /// Stores `items` (a JSON array) as response `response_id` of `tenant`
    /// for `ttl_us`; a second save of one id replaces the first. Expired
    /// rows are removed on the way.
    pub async fn save_conversation(
        &self,
        response_id: &str,
        tenant: Option<&str>,
        items: &str,
        ttl_us: i64,
    ) -> Result<(), LedgerError> {
        let now = unix_micros_now();
        sqlx::query("DELETE FROM stored_responses WHERE expires_us < $1 OR response_id = $2")
            .bind(now)
            .bind(response_id)
            .execute(self.pool())
            .await
            .map_err(db("expire stored responses"))?;
        sqlx::query(
            "INSERT INTO stored_responses (response_id, tenant, items, created_us, expires_us) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(response_id)
        .bind(tenant)
        .bind(items)
        .bind(now)
        .bind(now.saturating_add(ttl_us))
        .execute(self.pool())
        .await
        .map_err(db("store response"))?;
        Ok(())
    }

    /// The items of response `response_id`, if `tenant` stored it and it
    /// has not expired.
    pub async fn load_conversation(
        &self,
        response_id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<String>, LedgerError> {
        let row = sqlx::query(
            "SELECT items FROM stored_responses WHERE response_id = $1 \
             AND COALESCE(tenant, '') = COALESCE($2, '') AND expires_us >= $3",
        )
        .bind(response_id)
        .bind(tenant)
        .bind(unix_micros_now())
        .fetch_optional(self.pool())
        .await
        .map_err(db("find stored response"))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(db("read stored response"))
    }
}
