//! Conversation turns for formats that want roles to alternate (Anthropic,
//! Bedrock, Gemini): consecutive messages of one role are merged into one
//! turn as the request is built.

use serde::Serialize;

/// One turn of a provider's conversation: a role and its pieces (blocks,
/// parts), as [`push_turn`] builds it.
pub(crate) trait Turn {
    /// One piece of the turn's content.
    type Piece;

    /// A turn of `role` holding `pieces`.
    fn new(role: &'static str, pieces: Vec<Self::Piece>) -> Self;

    /// The turn's role (`None`: a turn without one, which nothing merges into).
    fn role(&self) -> Option<&'static str>;

    /// The turn's pieces, for more to be added.
    fn pieces_mut(&mut self) -> &mut Vec<Self::Piece>;
}

/// Adds `pieces` spoken by `role`: to the last turn when it has the same
/// role, else as a new turn. Nothing is added for no pieces.
pub(crate) fn push_turn<T: Turn>(turns: &mut Vec<T>, role: &'static str, pieces: Vec<T::Piece>) {
    if pieces.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role() == Some(role) => last.pieces_mut().extend(pieces),
        _ => turns.push(T::new(role, pieces)),
    }
}

/// A turn as Anthropic and Bedrock take it: `{"role": .., "content": [..]}`.
#[derive(Debug, Serialize)]
pub(crate) struct ContentTurn<B> {
    pub role: &'static str,
    pub content: Vec<B>,
}

impl<B> Turn for ContentTurn<B> {
    type Piece = B;

    fn new(role: &'static str, content: Vec<B>) -> Self {
        ContentTurn { role, content }
    }

    fn role(&self) -> Option<&'static str> {
        Some(self.role)
    }

    fn pieces_mut(&mut self) -> &mut Vec<B> {
        &mut self.content
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_consecutive_turns_of_one_role_and_skips_empty_ones() {
        let mut turns: Vec<ContentTurn<&str>> = Vec::new();
        push_turn(&mut turns, "user", vec![]);
        assert!(turns.is_empty(), "no pieces, no turn");
        push_turn(&mut turns, "user", vec!["a"]);
        push_turn(&mut turns, "user", vec!["b", "c"]);
        push_turn(&mut turns, "assistant", vec!["d"]);
        push_turn(&mut turns, "assistant", vec![]);
        push_turn(&mut turns, "user", vec!["e"]);
        let got: Vec<_> = turns.iter().map(|t| (t.role, t.content.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("user", vec!["a", "b", "c"]),
                ("assistant", vec!["d"]),
                ("user", vec!["e"]),
            ]
        );
    }
}
