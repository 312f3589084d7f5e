//! The spool: records waiting on disk for the database.
//!
//! A directory of append-only segment files, `segment-<20-digit index>.jsonl`,
//! one JSON line per record: `{"v":2,"record_id":"…","record":{…}}`. Lines
//! of version 1 (written before records carried `cost_picos`) are still
//! read, their `cost_picos` derived from `cost_micros` as migration `0003`
//! derives it for stored rows. Lines written before records counted
//! prompt-cache writes have no `usage.cache_write_tokens` and read it as 0,
//! as migration `0005` does for stored rows.
//! Records are appended to the *active* segment (the writer's failed batches
//! fsync'd per batch; the request path's overflow written at once and
//! fsync'd by the writer on its next tick). Replay first *seals* the active
//! segment (later appends start a new one), then reads sealed segments in
//! index order and deletes each once all its records are committed. A
//! segment holding an unreadable line (a write torn by a crash) is renamed to
//! `.corrupt` instead of deleted, for a person to look at.
//!
//! Replay is idempotent: `record_id` is unique in the table and records
//! already there are skipped, so a crash between commit and delete costs
//! nothing but a second look.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::counters::LedgerCounters;
use crate::pricing::micros_to_picos;
use crate::record::UsageRecord;
use crate::LedgerError;

/// A segment is sealed once it grows past this, so replay never reads more
/// than about this much into memory at once.
const SEGMENT_MAX_BYTES: u64 = 16 << 20;

/// Spool format version written in every line: 2 since records carry
/// `cost_picos`.
const LINE_VERSION: u32 = 2;

/// The version of lines whose records have no `cost_picos`.
const LINE_VERSION_WITHOUT_PICOS: u32 = 1;

/// A record on its way to the database, with the id that makes writing it
/// idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    /// Unique id (UUID v4), assigned when the record entered the ledger.
    pub(crate) record_id: String,
    /// The record itself.
    pub(crate) record: UsageRecord,
}

impl PendingRecord {
    pub(crate) fn new(record: UsageRecord) -> PendingRecord {
        PendingRecord {
            // Time-ordered (v7), so the unique index on it grows at its end
            // instead of dirtying a random page per record: half the pages
            // each batch writes to SQLite's WAL.
            record_id: uuid::Uuid::now_v7().to_string(),
            record,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SpoolLine {
    v: u32,
    #[serde(flatten)]
    pending: PendingRecord,
}

/// The records of one sealed segment.
#[derive(Debug)]
pub(crate) struct SegmentContents {
    pub(crate) path: PathBuf,
    pub(crate) records: Vec<PendingRecord>,
    /// Lines that did not parse (torn writes); they cannot be replayed.
    pub(crate) bad_lines: u64,
    pub(crate) bytes: u64,
}

/// The spool directory and its active segment.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    state: Mutex<SpoolState>,
    counters: Arc<LedgerCounters>,
}

#[derive(Debug)]
struct SpoolState {
    active: Option<ActiveSegment>,
    next_index: u64,
    /// Appended without fsync since the last [`Spool::sync`].
    dirty: bool,
}

#[derive(Debug)]
struct ActiveSegment {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool directory and counts what earlier runs left in it.
    pub(crate) fn open(dir: &Path, counters: Arc<LedgerCounters>) -> Result<Spool, LedgerError> {
        fs::create_dir_all(dir).map_err(LedgerError::spool(dir))?;
        let segments = list_segments(dir)?;
        let mut next_index = 0;
        for (index, path) in &segments {
            next_index = next_index.max(index + 1);
            let data = fs::read(path).map_err(LedgerError::spool(path))?;
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
            counters.spool_added(lines, data.len() as u64);
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            state: Mutex::new(SpoolState {
                active: None,
                next_index,
                dirty: false,
            }),
            counters,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        // A panic while holding the lock leaves at worst a partly written
        // line, which replay already tolerates.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `records` to the active segment in one write. With `durable`
    /// the data is fsync'd before returning; otherwise it is left for the
    /// next [`Spool::sync`] (the request path must not wait on a disk flush).
    pub(crate) fn append(
        &self,
        records: &[PendingRecord],
        durable: bool,
    ) -> Result<(), LedgerError> {
        let appended = self.append_lines(records, durable);
        self.counters.set_spool_failing(appended.is_err());
        appended
    }

    fn append_lines(&self, records: &[PendingRecord], durable: bool) -> Result<(), LedgerError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 512);
        for pending in records {
            let line = SpoolLine {
                v: LINE_VERSION,
                pending: pending.clone(),
            };
            serde_json::to_writer(&mut buf, &line)
                .map_err(|e| LedgerError::spool(&self.dir)(std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let mut state = self.lock();
        if state.active.is_none() {
            let index = state.next_index;
            state.next_index += 1;
            let path = self.dir.join(format!("segment-{index:020}.jsonl"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(LedgerError::spool(&path))?;
            sync_dir(&self.dir)?;
            state.active = Some(ActiveSegment {
                path,
                file,
                bytes: 0,
            });
        }
        let Some(active) = state.active.as_mut() else {
            return Err(LedgerError::spool(&self.dir)(std::io::Error::other(
                "no active spool segment",
            )));
        };
        active
            .file
            .write_all(&buf)
            .map_err(LedgerError::spool(&active.path))?;
        active.bytes += buf.len() as u64;
        let full = active.bytes >= SEGMENT_MAX_BYTES;
        if durable || full {
            active
                .file
                .sync_data()
                .map_err(LedgerError::spool(&active.path))?;
            state.dirty = false;
        } else {
            state.dirty = true;
        }
        if full {
            state.active = None;
        }
        drop(state);
        self.counters
            .spool_added(records.len() as u64, buf.len() as u64);
        Ok(())
    }

    /// Fsyncs what [`Spool::append`] left unsynced.
    pub(crate) fn sync(&self) -> Result<(), LedgerError> {
        let mut state = self.lock();
        if !state.dirty {
            return Ok(());
        }
        if let Some(active) = &state.active {
            active
                .file
                .sync_data()
                .map_err(LedgerError::spool(&active.path))?;
        }
        state.dirty = false;
        Ok(())
    }

    /// Closes the active segment (fsync'd) so replay can take it; the next
    /// append starts a new one.
    pub(crate) fn seal(&self) -> Result<(), LedgerError> {
        let mut state = self.lock();
        if let Some(active) = state.active.take() {
            active
                .file
                .sync_data()
                .map_err(LedgerError::spool(&active.path))?;
        }
        state.dirty = false;
        Ok(())
    }

    /// Sealed segments, oldest first.
    pub(crate) fn sealed_segments(&self) -> Result<Vec<PathBuf>, LedgerError> {
        let active = self.lock().active.as_ref().map(|a| a.path.clone());
        Ok(list_segments(&self.dir)?
            .into_iter()
            .map(|(_, path)| path)
            .filter(|path| Some(path) != active.as_ref())
            .collect())
    }

    /// Reads every record of a sealed segment, in file order.
    pub(crate) fn read_segment(path: &Path) -> Result<SegmentContents, LedgerError> {
        let file = File::open(path).map_err(LedgerError::spool(path))?;
        let mut contents = SegmentContents {
            path: path.to_path_buf(),
            records: Vec::new(),
            bad_lines: 0,
            bytes: 0,
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(LedgerError::spool(path))?;
            contents.bytes += line.len() as u64 + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(&line) {
                Ok(parsed) if parsed.v == LINE_VERSION => contents.records.push(parsed.pending),
                Ok(parsed) => {
                    tracing::error!(path = %path.display(), version = parsed.v, "spool line of unknown version");
                    contents.bad_lines += 1;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable spool line");
                    contents.bad_lines += 1;
                }
            }
        }
        Ok(contents)
    }

    /// Removes a segment whose records are all committed (or renames it to
    /// `.corrupt` when it had unreadable lines).
    pub(crate) fn finish_segment(&self, contents: &SegmentContents) -> Result<(), LedgerError> {
        let path = &contents.path;
        if contents.bad_lines > 0 {
            let kept = path.with_extension("corrupt");
            fs::rename(path, &kept).map_err(LedgerError::spool(path))?;
            self.counters.spool_corrupt_lines_found(contents.bad_lines);
        } else {
            fs::remove_file(path).map_err(LedgerError::spool(path))?;
        }
        sync_dir(&self.dir)?;
        self.counters.spool_removed(
            contents.records.len() as u64 + contents.bad_lines,
            contents.bytes,
        );
        Ok(())
    }

    /// Whether any record waits in the spool (sealed or active).
    pub(crate) fn has_pending(&self) -> bool {
        self.counters.spool_pending_records() > 0
    }
}

/// Reads one spool line, upgrading a version 1 line to the current
/// version. A line of any other version is returned as read.
fn parse_line(line: &[u8]) -> Result<SpoolLine, serde_json::Error> {
    let error = match serde_json::from_slice::<SpoolLine>(line) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    // Only a version 1 line (no `cost_picos`) takes this slower path.
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Err(error);
    };
    let v1 = value.get("v").and_then(serde_json::Value::as_u64)
        == Some(u64::from(LINE_VERSION_WITHOUT_PICOS));
    let record = value
        .get_mut("record")
        .and_then(serde_json::Value::as_object_mut);
    let (true, Some(record)) = (v1, record) else {
        return Err(error);
    };
    let Some(micros) = record
        .get("cost_micros")
        .and_then(serde_json::Value::as_i64)
    else {
        return Err(error);
    };
    record.insert("cost_picos".into(), micros_to_picos(micros).into());
    let mut parsed: SpoolLine = serde_json::from_value(value)?;
    parsed.v = LINE_VERSION;
    Ok(parsed)
}

/// `(index, path)` of every segment file in `dir`, by index.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(LedgerError::spool(dir))? {
        let entry = entry.map_err(LedgerError::spool(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let index = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(index) = index {
            segments.push((index, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Makes a file's creation, rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LedgerError::spool(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{EndState, TokenUsage, UsageSource};

    fn pending(n: u32) -> PendingRecord {
        PendingRecord::new(UsageRecord {
            time_us: 1,
            request_id: format!("req-{n}"),
            tenant: None,
            key_id: None,
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            usage: TokenUsage::default(),
            usage_source: UsageSource::Counted,
            cost_micros: 0,
            cost_picos: 0,
            priced: false,
            latency_ms: 1,
            ttft_ms: None,
            http_status: 200,
            stream: false,
            end_state: EndState::Completed,
        })
    }

    #[test]
    fn append_seal_read_finish() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(LedgerCounters::default());
        let spool = Spool::open(dir.path(), counters.clone()).unwrap();
        spool.append(&[pending(1), pending(2)], true).unwrap();
        spool.append(&[pending(3)], false).unwrap();
        assert_eq!(counters.spool_pending_records(), 3);
        assert!(
            spool.sealed_segments().unwrap().is_empty(),
            "active segment is not sealed"
        );
        spool.seal().unwrap();
        spool.append(&[pending(4)], true).unwrap();
        let sealed = spool.sealed_segments().unwrap();
        assert_eq!(sealed.len(), 1);
        let contents = Spool::read_segment(&sealed[0]).unwrap();
        let ids: Vec<_> = contents
            .records
            .iter()
            .map(|p| p.record.request_id.as_str())
            .collect();
        assert_eq!(ids, ["req-1", "req-2", "req-3"]);
        spool.finish_segment(&contents).unwrap();
        assert_eq!(counters.spool_pending_records(), 1);
        assert!(!sealed[0].exists());
    }

    #[test]
    fn reopening_counts_leftovers_and_continues_numbering() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), Arc::new(LedgerCounters::default())).unwrap();
            spool.append(&[pending(1), pending(2)], true).unwrap();
        }
        let counters = Arc::new(LedgerCounters::default());
        let spool = Spool::open(dir.path(), counters.clone()).unwrap();
        assert_eq!(counters.spool_pending_records(), 2);
        assert!(counters.snapshot().spool_bytes > 0);
        spool.append(&[pending(3)], true).unwrap();
        let all = list_segments(dir.path()).unwrap();
        assert_eq!(all.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        // Only the leftover is sealed; segment 1 is active.
        assert_eq!(spool.sealed_segments().unwrap(), vec![all[0].1.clone()]);
    }

    #[test]
    fn version_1_lines_replay_with_cost_picos_derived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment-00000000000000000000.jsonl");
        // A line as sluice wrote it before records carried cost_picos.
        let v1 = r#"{"v":1,"record_id":"r-1","record":{"time_us":1,"request_id":"req-1","tenant":null,"key_id":null,"model":"m","provider":"p","upstream_model":"m","usage":{"prompt_tokens":26,"completion_tokens":0,"cached_prompt_tokens":0},"usage_source":"reported","cost_micros":10,"priced":true,"latency_ms":1,"ttft_ms":null,"http_status":200,"stream":false,"end_state":"completed"}}"#;
        // A version this build does not know, and a v1 line missing its cost.
        let v9 = v1.replace(r#""v":1"#, r#""v":9"#);
        let no_cost = v1.replace(r#""cost_micros":10,"#, "");
        std::fs::write(&path, format!("{v1}\n{v9}\n{no_cost}\n")).unwrap();
        let contents = Spool::read_segment(&path).unwrap();
        assert_eq!(contents.bad_lines, 2);
        let [pending] = contents.records.as_slice() else {
            panic!("{:?}", contents.records)
        };
        assert_eq!(pending.record_id, "r-1");
        assert_eq!(
            (pending.record.cost_micros, pending.record.cost_picos),
            (10, 10_000_000)
        );
        assert_eq!(pending.record.usage.cache_write_tokens, 0);
        // What is written now is version 2 and reads back as written.
        let line = SpoolLine {
            v: LINE_VERSION,
            pending: pending.clone(),
        };
        let text = serde_json::to_vec(&line).unwrap();
        assert!(text.starts_with(br#"{"v":2,"#));
        assert_eq!(parse_line(&text).unwrap().pending, *pending);
    }

    #[test]
    fn lines_from_before_cache_writes_read_them_as_zero_and_new_lines_keep_them() {
        // A version 2 line as sluice wrote it before usage counted cache writes.
        let old = r#"{"v":2,"record_id":"r-2","record":{"time_us":1,"request_id":"req-2","tenant":null,"key_id":null,"model":"m","provider":"p","upstream_model":"m","usage":{"prompt_tokens":26,"completion_tokens":0,"cached_prompt_tokens":6},"usage_source":"reported","cost_micros":10,"cost_picos":9000000,"priced":true,"latency_ms":1,"ttft_ms":null,"http_status":200,"stream":false,"end_state":"completed"}}"#;
        let parsed = parse_line(old.as_bytes()).unwrap();
        assert_eq!(parsed.v, LINE_VERSION);
        let usage = parsed.pending.record.usage;
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_prompt_tokens,
                usage.cache_write_tokens
            ),
            (26, 6, 0)
        );
        let mut writing = pending(7);
        writing.record.usage.cache_write_tokens = 20;
        let line = SpoolLine {
            v: LINE_VERSION,
            pending: writing.clone(),
        };
        let text = serde_json::to_vec(&line).unwrap();
        assert_eq!(parse_line(&text).unwrap().pending, writing);
    }

    #[test]
    fn torn_lines_are_skipped_and_the_segment_kept() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(LedgerCounters::default());
        let spool = Spool::open(dir.path(), counters.clone()).unwrap();
        spool.append(&[pending(1)], true).unwrap();
        spool.seal().unwrap();
        let path = spool.sealed_segments().unwrap().remove(0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"v\":1,\"record_id\":\"x\",\"rec")
            .unwrap();
        let contents = Spool::read_segment(&path).unwrap();
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.bad_lines, 1);
        spool.finish_segment(&contents).unwrap();
        assert!(path.with_extension("corrupt").exists());
        assert_eq!(counters.snapshot().spool_corrupt_lines, 1);
        assert_eq!(counters.spool_pending_records(), 0);
    }
}
