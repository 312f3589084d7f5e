//! Checking every node's hash chain ([`Store::verify`]).

use futures_util::TryStreamExt;
use sqlx::Row;

use crate::chain::{Hash, GENESIS_HASH};
use crate::store::{decode_row, Store, ROW_COLUMNS};
use crate::LedgerError;

/// The outcome of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per node found in the table, by node id.
    pub chains: Vec<ChainSummary>,
    /// The first break of each broken chain, by node id. Empty when intact.
    pub breaks: Vec<ChainBreak>,
}

impl VerifyReport {
    /// Whether every chain verified.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }

    /// The first break found (lowest node id), if any.
    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.breaks.first()
    }
}

/// One node's chain as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// The node id.
    pub node_id: String,
    /// Rows read.
    pub records: u64,
    /// Highest sequence number read (0 for none).
    pub last_seq: i64,
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Node whose chain is broken.
    pub node_id: String,
    /// Sequence number of the first row that does not verify.
    pub seq: i64,
    /// What is wrong with it.
    pub problem: ChainProblem,
}

/// What is wrong at a [`ChainBreak`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Sequence numbers skip: rows before this one were deleted (or the
    /// chain does not start at 1).
    Gap {
        /// The sequence number that should have come next.
        expected_seq: i64,
    },
    /// The row's `prev_hash` is not the previous row's `hash`: the previous
    /// row was replaced, or rows were spliced in.
    BrokenLink,
    /// The row's content does not hash to its stored `hash`: it was edited.
    ContentMismatch,
    /// The row holds values the writer never writes.
    InvalidRow {
        /// What is wrong with it.
        message: String,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (node, seq) = (&self.node_id, self.seq);
        match &self.problem {
            ChainProblem::Gap { expected_seq } => {
                write!(
                    f,
                    "node {node}: seq {seq} follows a gap (expected seq {expected_seq})"
                )
            }
            ChainProblem::BrokenLink => {
                write!(
                    f,
                    "node {node}: seq {seq} does not link to the row before it"
                )
            }
            ChainProblem::ContentMismatch => {
                write!(
                    f,
                    "node {node}: seq {seq} was modified (content does not match its hash)"
                )
            }
            ChainProblem::InvalidRow { message } => {
                write!(f, "node {node}: seq {seq} is invalid: {message}")
            }
        }
    }
}

impl Store {
    /// Walks every node's chain in sequence order, recomputing each row's
    /// hash with the row's own encoding version (see [`crate::chain`]) and
    /// checking what that version leaves unhashed, and reports per node the
    /// row count and the first break. Streams rows; memory stays flat on
    /// large tables.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let nodes: Vec<String> =
            sqlx::query("SELECT DISTINCT node_id FROM usage_records ORDER BY node_id")
                .fetch_all(self.pool())
                .await
                .map_err(LedgerError::database("list chains"))?
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<_, _>>()
                .map_err(LedgerError::database("list chains"))?;
        let mut report = VerifyReport {
            chains: Vec::with_capacity(nodes.len()),
            breaks: Vec::new(),
        };
        for node_id in nodes {
            let (summary, broken) = self.verify_chain(&node_id).await?;
            report.chains.push(summary);
            report.breaks.extend(broken);
        }
        Ok(report)
    }

    /// Verifies one node's chain: its summary and its first break, if any.
    pub async fn verify_chain(
        &self,
        node_id: &str,
    ) -> Result<(ChainSummary, Option<ChainBreak>), LedgerError> {
        let sql =
            format!("SELECT {ROW_COLUMNS} FROM usage_records WHERE node_id = $1 ORDER BY seq");
        let mut rows = sqlx::query(&sql).bind(node_id).fetch(self.pool());
        let mut summary = ChainSummary {
            node_id: node_id.to_string(),
            records: 0,
            last_seq: 0,
        };
        let mut first_break = None;
        let mut prev: (i64, Hash) = (0, GENESIS_HASH);
        while let Some(any_row) = rows
            .try_next()
            .await
            .map_err(LedgerError::database("read chain"))?
        {
            summary.records += 1;
            let problem = match decode_row(&any_row) {
                Err(LedgerError::InvalidRow { seq, message, .. }) => {
                    summary.last_seq = seq;
                    Some((seq, ChainProblem::InvalidRow { message }))
                }
                Err(other) => return Err(other),
                Ok(stored) => {
                    let seq = stored.row.seq;
                    summary.last_seq = seq;
                    let problem = if seq != prev.0 + 1 {
                        Some(ChainProblem::Gap {
                            expected_seq: prev.0 + 1,
                        })
                    } else if stored.prev_hash != prev.1 {
                        Some(ChainProblem::BrokenLink)
                    } else if stored.row.hash(&stored.prev_hash) != stored.hash {
                        Some(ChainProblem::ContentMismatch)
                    } else {
                        stored
                            .row
                            .unhashed_mismatch()
                            .map(|message| ChainProblem::InvalidRow {
                                message: message.into(),
                            })
                    };
                    prev = (seq, stored.hash);
                    problem.map(|p| (seq, p))
                }
            };
            if let (None, Some((seq, problem))) = (&first_break, problem) {
                first_break = Some(ChainBreak {
                    node_id: node_id.to_string(),
                    seq,
                    problem,
                });
            }
        }
        Ok((summary, first_break))
    }
}
