//! A user's prompt turned into the model's input tokens, as mlx-lm's commands do it: the chat
//! template around it (system message, `--prefill-response`, template variables), the part a
//! prompt cache already holds left out, and special tokens added only where no template ran.
//!
//! `mlx_lm.cache_prompt` caches the conversation up to the end of the user's text (the message
//! left open); `mlx_lm.generate --prompt-cache-file` then feeds only what follows the cached
//! conversation's opening: the new text, the end of the user's turn and the assistant's cue.
//! Following both exactly is what lets a prompt-cache file move between the two tools.

use serde_json::{json, Map, Value};

use crate::chat::ChatOptions;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What `mlx_lm.generate` is asked to generate from.
#[derive(Clone, Debug, Default)]
pub struct UserPrompt {
    /// The user's message (or the raw prompt without a template).
    pub prompt: String,
    /// A system message before it.
    pub system: Option<String>,
    /// The start of the assistant's reply, which the model continues.
    pub prefill_response: Option<String>,
    /// Feed the prompt as it is, without the chat template.
    pub ignore_chat_template: bool,
    /// Extra template variables (`--chat-template-config`).
    pub template_config: Map<String, Value>,
    /// The tokens continue a prompt cache: only the part after the cached conversation's
    /// opening is encoded (mlx-lm's convention for `--prompt-cache-file`).
    pub continues_cache: bool,
}

/// Marks where the user's text goes, to find what a cached conversation already holds.
const QUERY: &str = "<query>";

/// The token ids `mlx_lm.generate` feeds the model for `p`.
pub fn encode_user_prompt(tokenizer: &Tokenizer, p: &UserPrompt) -> Result<Vec<u32>> {
    let template = match tokenizer.chat_template.as_ref() {
        Some(t) if !p.ignore_chat_template => t,
        // Without a template the text is encoded as it is, special tokens added (a prompt that
        // continues a cache gets them too, as in mlx-lm).
        _ => return tokenizer.encode(&p.prompt, true),
    };
    let mut messages = Vec::new();
    if let Some(s) = &p.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": p.prompt}));
    if let Some(r) = &p.prefill_response {
        messages.push(json!({"role": "assistant", "content": r}));
    }
    let options = ChatOptions {
        add_generation_prompt: p.prefill_response.is_none(),
        continue_final_message: p.prefill_response.is_some(),
        extra: p.template_config.clone(),
        tools: None,
    };
    let mut text = template.render(&messages, &options)?;
    if p.continues_cache {
        // The last message's text replaced by a marker shows where the new part begins (the
        // template variables are left out here, as mlx-lm leaves them out).
        if let Some(m) = messages.last_mut() {
            m["content"] = json!(QUERY);
        }
        let probe = template.render(&messages, &ChatOptions { extra: Map::new(), ..options })?;
        let at = probe.find(QUERY).ok_or_else(|| {
            Error::Template("the chat template does not show the prompt, so a cached prefix cannot be found".into())
        })?;
        text = text.get(at..).map(str::to_string).unwrap_or_default();
    }
    tokenizer.encode(&text, false)
}

/// The token ids `mlx_lm.cache_prompt` caches for `prompt`: with a chat template, a
/// conversation whose user message is left open; without one (or with
/// `ignore_chat_template`), the text with special tokens.
pub fn encode_cached_prompt(tokenizer: &Tokenizer, prompt: &str, ignore_chat_template: bool) -> Result<Vec<u32>> {
    match tokenizer.chat_template.as_ref() {
        Some(t) if !ignore_chat_template => {
            let messages = [json!({"role": "user", "content": prompt})];
            let text = t.render(&messages, &ChatOptions { continue_final_message: true, ..Default::default() })?;
            tokenizer.encode(&text, false)
        }
        _ => tokenizer.encode(prompt, true),
    }
}
