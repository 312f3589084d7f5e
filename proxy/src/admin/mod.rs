//! The admin API: keys and tenants ([`keys`]) and usage reports
//! ([`usage`]), both over the ledger's database through the control runtime.

pub mod keys;
pub mod usage;

use crate::ops::Accounting;

/// What the admin handlers work with.
pub struct AdminContext<'a> {
    /// Keys, tenants, budgets: admin checks, and what changes take effect in.
    pub access: &'a sluice_filters::AccessPolicy,
    /// The report store.
    pub accounting: &'a Accounting,
    /// The control runtime, where database calls run.
    pub control: &'a tokio::runtime::Handle,
    /// Configured model names (to validate budgets' `downgrade_to`).
    pub model_names: &'a [String],
}
