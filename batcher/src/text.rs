//! Text output: incremental detokenization (bytes of one character may span
//! tokens) and stop strings matched across token boundaries.

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::error::{BatcherError, Result};

/// Turns a growing list of token ids into text, a piece at a time, never
/// emitting half a UTF-8 character (TGI's prefix/read offsets).
#[derive(Debug, Clone)]
pub struct IncrementalDecoder {
    /// The tokenizer.
    tokenizer: Arc<Tokenizer>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of what has been emitted.
    read_offset: usize,
}

impl IncrementalDecoder {
    /// A decoder whose output starts after the first `prompt_len` tokens.
    pub fn new(tokenizer: Arc<Tokenizer>, prompt_len: usize) -> Self {
        Self {
            tokenizer,
            prefix_offset: prompt_len.saturating_sub(5),
            read_offset: prompt_len,
        }
    }

    /// The new text that `tokens` (all ids so far) adds; empty while a
    /// character is incomplete.
    pub fn next_piece(&mut self, tokens: &[u32]) -> Result<String> {
        let decode = |ids: &[u32]| {
            self.tokenizer
                .decode(ids, false)
                .map_err(|e| BatcherError::Tokenizer(e.to_string()))
        };
        let prefix = decode(
            tokens
                .get(self.prefix_offset..self.read_offset)
                .unwrap_or(&[]),
        )?;
        let full = decode(tokens.get(self.prefix_offset..).unwrap_or(&[]))?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let piece = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = tokens.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }
}

/// Finds stop strings in the streamed text and holds back any tail that could
/// still become one, so no part of a stop string is ever emitted.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    /// The stop strings.
    stops: Vec<String>,
    /// Text received but not yet released.
    pending: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Release this text; no stop string yet.
    Continue(String),
    /// A stop string matched: release this text (before it) and finish.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds a decoded piece; returns what may be released.
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(piece.to_string());
        }
        self.pending.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest tail that is a prefix of some stop string.
        let mut hold = 0;
        for stop in &self.stops {
            for len in (1..stop.len().min(self.pending.len() + 1)).rev() {
                let tail_start = self.pending.len() - len;
                if self.pending.is_char_boundary(tail_start)
                    && stop.is_char_boundary(len)
                    && self.pending[tail_start..] == stop[..len]
                {
                    hold = hold.max(len);
                    break;
                }
            }
        }
        let release = self.pending.len() - hold;
        let out = self.pending[..release].to_string();
        self.pending.drain(..release);
        StopOutcome::Continue(out)
    }

    /// Text still held back (released when the sequence ends for another reason).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_split_across_pieces_is_caught_and_never_emitted() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("hello S"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("T"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("OP and more"), StopOutcome::Stopped(String::new()));
    }

    #[test]
    fn false_start_is_released_later() {
        let mut m = StopMatcher::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(m.push("a\n"), StopOutcome::Continue("a".into()));
        assert_eq!(m.push("b E"), StopOutcome::Continue("\nb ".into()));
        assert_eq!(m.push("x"), StopOutcome::Continue("Ex".into()));
        assert_eq!(m.push("yEN"), StopOutcome::Continue("y".into()));
        assert_eq!(m.flush(), "EN");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopMatcher::new(vec!["cd".into(), "b".into()]);
        assert_eq!(m.push("abcd"), StopOutcome::Stopped("a".into()));
    }
}
