//! Keys and tenants managed through the admin API, in the same database as
//! the usage records. Only a key's SHA-256 is stored; the settings travel as
//! JSON in the config file's shape, validated by the gateway when read.

use crate::record::unix_micros_now;
use crate::{LedgerError, Store};
use sqlx::Row;

/// A key as stored: never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Non-secret id.
    pub key_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// SHA-256 of the key, lower-case hex.
    pub key_sha256: String,
    /// Settings as JSON (models, priority, expiry, limits, budget).
    pub spec: String,
    /// Disabled keys are refused.
    pub enabled: bool,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenant {
    /// Tenant name.
    pub name: String,
    /// Settings as JSON (limits, budget).
    pub spec: String,
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
    LedgerError::database(what)
}

fn key_of(row: &sqlx::any::AnyRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        key_id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        key_sha256: row.try_get(2)?,
        spec: row.try_get(3)?,
        enabled: row.try_get::<i64, _>(4)? != 0,
    })
}

const KEY_COLUMNS: &str = "key_id, tenant, key_sha256, spec, enabled";

impl Store {
    /// Stores a new key; fails if its id or hash exists.
    pub async fn insert_key(&self, key: &StoredKey) -> Result<(), LedgerError> {
        let now = unix_micros_now();
        sqlx::query(
            "INSERT INTO api_keys (key_id, tenant, key_sha256, spec, enabled, created_us, updated_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.key_id)
        .bind(&key.tenant)
        .bind(&key.key_sha256)
        .bind(&key.spec)
        .bind(i64::from(key.enabled))
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(db("insert key"))?;
        Ok(())
    }

    /// The key with this hash.
    pub async fn key_by_hash(&self, key_sha256: &str) -> Result<Option<StoredKey>, LedgerError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_sha256 = $1");
        let row = sqlx::query(&sql)
            .bind(key_sha256)
            .fetch_optional(self.pool())
            .await
            .map_err(db("find key"))?;
        row.map(|r| key_of(&r)).transpose().map_err(db("read key"))
    }

    /// The key with this id.
    pub async fn key_by_id(&self, key_id: &str) -> Result<Option<StoredKey>, LedgerError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1");
        let row = sqlx::query(&sql)
            .bind(key_id)
            .fetch_optional(self.pool())
            .await
            .map_err(db("find key"))?;
        row.map(|r| key_of(&r)).transpose().map_err(db("read key"))
    }

    /// Every key, or a tenant's, by id.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<StoredKey>, LedgerError> {
        let rows = match tenant {
            Some(t) => {
                let sql =
                    format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY key_id");
                sqlx::query(&sql).bind(t).fetch_all(self.pool()).await
            }
            None => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY key_id");
                sqlx::query(&sql).fetch_all(self.pool()).await
            }
        }
        .map_err(db("list keys"))?;
        rows.iter()
            .map(key_of)
            .collect::<Result<_, _>>()
            .map_err(db("read key"))
    }

    /// Replaces a key's hash (rotation) or enabled flag; returns the key as
    /// it was, or `None` if there is no such key.
    pub async fn update_key(
        &self,
        key_id: &str,
        new_sha256: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<Option<StoredKey>, LedgerError> {
        let Some(old) = self.key_by_id(key_id).await? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE api_keys SET key_sha256 = $1, enabled = $2, updated_us = $3 WHERE key_id = $4",
        )
        .bind(new_sha256.unwrap_or(&old.key_sha256))
        .bind(i64::from(enabled.unwrap_or(old.enabled)))
        .bind(unix_micros_now())
        .bind(key_id)
        .execute(self.pool())
        .await
        .map_err(db("update key"))?;
        Ok(Some(old))
    }

    /// Deletes a key; returns it as it was.
    pub async fn delete_key(&self, key_id: &str) -> Result<Option<StoredKey>, LedgerError> {
        let Some(old) = self.key_by_id(key_id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM api_keys WHERE key_id = $1")
            .bind(key_id)
            .execute(self.pool())
            .await
            .map_err(db("delete key"))?;
        Ok(Some(old))
    }

    /// Creates or replaces a tenant's settings.
    pub async fn upsert_tenant(&self, tenant: &StoredTenant) -> Result<(), LedgerError> {
        let now = unix_micros_now();
        sqlx::query(
            "INSERT INTO tenants (name, spec, created_us, updated_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_us = excluded.updated_us",
        )
        .bind(&tenant.name)
        .bind(&tenant.spec)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(db("upsert tenant"))?;
        Ok(())
    }

    /// Every stored tenant, by name.
    pub async fn list_tenants(&self) -> Result<Vec<StoredTenant>, LedgerError> {
        let rows = sqlx::query("SELECT name, spec FROM tenants ORDER BY name")
            .fetch_all(self.pool())
            .await
            .map_err(db("list tenants"))?;
        rows.iter()
            .map(|r| {
                Ok(StoredTenant {
                    name: r.try_get(0)?,
                    spec: r.try_get(1)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("read tenant"))
    }

    /// Deletes a tenant (its keys too); returns whether it existed.
    pub async fn delete_tenant(&self, name: &str) -> Result<bool, LedgerError> {
        sqlx::query("DELETE FROM api_keys WHERE tenant = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(db("delete tenant keys"))?;
        let done = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(db("delete tenant"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_and_tenants_round_trip_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::sqlite_url(&dir.path().join("k.db")))
            .await
            .unwrap();
        let key = StoredKey {
            key_id: "k1".into(),
            tenant: "acme".into(),
            key_sha256: "ab".repeat(32),
            spec: "{}".into(),
            enabled: true,
        };
        store.insert_key(&key).await.unwrap();
        assert!(store.insert_key(&key).await.is_err(), "ids are unique");
        assert_eq!(
            store.key_by_hash(&"ab".repeat(32)).await.unwrap(),
            Some(key.clone())
        );
        let old = store
            .update_key("k1", Some(&"cd".repeat(32)), Some(false))
            .await
            .unwrap();
        assert_eq!(old, Some(key));
        let now = store.key_by_id("k1").await.unwrap().unwrap();
        assert!(!now.enabled);
        assert_eq!(now.key_sha256, "cd".repeat(32));
        assert_eq!(store.list_keys(Some("acme")).await.unwrap().len(), 1);
        assert!(store.list_keys(Some("other")).await.unwrap().is_empty());
        store
            .upsert_tenant(&StoredTenant {
                name: "acme".into(),
                spec: "{\"a\":1}".into(),
            })
            .await
            .unwrap();
        store
            .upsert_tenant(&StoredTenant {
                name: "acme".into(),
                spec: "{\"a\":2}".into(),
            })
            .await
            .unwrap();
        assert_eq!(store.list_tenants().await.unwrap()[0].spec, "{\"a\":2}");
        assert!(store.delete_tenant("acme").await.unwrap());
        assert!(
            store.key_by_id("k1").await.unwrap().is_none(),
            "a tenant's keys go with it"
        );
    }
}
