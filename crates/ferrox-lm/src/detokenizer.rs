//! Streaming detokenization: text comes out as tokens arrive, and never a broken character.
//!
//! One mechanism serves byte-level BPE and SentencePiece alike: the new tokens are decoded
//! together with a few tokens of already-emitted context, and only the text past that
//! context's own decoding is emitted — so a SentencePiece word keeps its leading space and a
//! byte-level character split over several tokens waits until its last byte arrives (its
//! decoding would end in U+FFFD until then). SentencePiece byte-fallback pieces (`<0xE2>`) are
//! decoded a run at a time (an invalid run turns into U+FFFD as a whole), so text waits while
//! the last token is one of them.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Turns a stream of token ids into a stream of text pieces.
pub struct Detokenizer<'a> {
    tokenizer: &'a Tokenizer,
    tokens: Vec<u32>,
    /// Start of the context decoded with the new tokens.
    prefix: usize,
    /// Tokens before this index have been emitted.
    read: usize,
    text: String,
}

impl<'a> Detokenizer<'a> {
    /// An empty detokenizer over `tokenizer`.
    pub fn new(tokenizer: &'a Tokenizer) -> Detokenizer<'a> {
        Detokenizer { tokenizer, tokens: Vec::new(), prefix: 0, read: 0, text: String::new() }
    }

    /// Adds a token and returns the text it completes (often empty: a partial character, or
    /// nothing new).
    pub fn add_token(&mut self, token: u32) -> Result<String> {
        self.tokens.push(token);
        let piece = self.pending(false)?;
        self.text.push_str(&piece);
        Ok(piece)
    }

    /// Flushes whatever is held back (a trailing incomplete character comes out as U+FFFD, as
    /// a full decode would show it).
    pub fn finalize(&mut self) -> Result<String> {
        let piece = self.pending(true)?;
        self.text.push_str(&piece);
        Ok(piece)
    }

    /// All the text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The tokens added so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn pending(&mut self, last: bool) -> Result<String> {
        if self.read == self.tokens.len() {
            return Ok(String::new());
        }
        let context = self.tokenizer.decode(&self.tokens[self.prefix..self.read], false)?;
        let full = self.tokenizer.decode(&self.tokens[self.prefix..], false)?;
        let in_byte_run = self.tokens.last().is_some_and(|&t| self.tokenizer.is_byte_piece(t));
        let complete = !full.ends_with('\u{FFFD}') && !in_byte_run;
        if !(complete || last) || full.len() <= context.len() {
            if last {
                self.advance();
            }
            return Ok(String::new());
        }
        // The context's decoding is normally a prefix of the longer one; if a decoder rewrote
        // it (whitespace cleanup), emit from the last common character.
        let cut = if full.starts_with(&context) {
            context.len()
        } else {
            full.char_indices()
                .zip(context.chars())
                .take_while(|((_, a), b)| a == b)
                .map(|((i, a), _)| i + a.len_utf8())
                .last()
                .unwrap_or(0)
        };
        let piece = full[cut..].to_string();
        self.advance();
        Ok(piece)
    }

    fn advance(&mut self) {
        self.prefix = self.read;
        self.read = self.tokens.len();
    }
}
