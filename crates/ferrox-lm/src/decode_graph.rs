//! Replayed decode steps: on a GPU, a greedy decode step is recorded once
//! ([`fx::Replay`], a CUDA graph) and each later token runs it again with one launch, instead
//! of building, walking and launching its few hundred ops on the host.
//!
//! The step is built so its kernels do not change from one token to the next: the token ids
//! (one per row of a batch) and their position are i32 arrays in device memory, overwritten
//! before each replay; each
//! standard cache writes the new keys and values at that position in place and attention reads
//! the cache's whole buffer with the keys past the position masked (see
//! `StandardCache::device_pos`); rope reads the position there too. A recording is good while
//! the caches' buffers keep their size: when they are full, the step runs as usual (growing
//! them by [`crate::cache::STEP`] positions) and the next ones record anew — one step built
//! for replay and evaluated as usual (it compiles the kernels and shows the cache writes
//! happen in place), then one recorded.
//!
//! Anything else — a cache of another kind, a model whose step reads the position on the
//! host ([`LanguageModel::replays_decode`]), a recording that fails — runs as usual.
//!
//! The GPU does not wait for the host between tokens: when a replayed step is enqueued, the
//! next one is enqueued behind it at once, its token ids fed from this step's picks on the
//! device ([`Replay::feed`]), before the host waits for this step's picks. The host's work on
//! a token (detokenizing, stop checks, the caller's) then overlaps the next step instead of
//! leaving the GPU idle. That step ahead is used when the caller asks for those very tokens at
//! that position — greedy picks always are — and otherwise dropped: it wrote the caches only
//! at the position the step that replaces it writes again.

use std::sync::Arc;

use ferrox::{self as fx, Array, Replay, Started};

use crate::cache::KvCache;
use crate::error::Result;
use crate::models::LanguageModel;
use crate::sample::{greedy_arrays, read_picks, Sampled};

/// A recording and the inputs it reads.
struct Recorded {
    replay: Replay,
    /// The token ids, `[B, 1]` i32 on the device.
    token: Array,
    /// Their position, `[1]` i32 on the device.
    pos: Array,
    /// The caches' (rows, positions) the recording was made for.
    shape: (usize, usize),
    /// The step enqueued ahead (see the module documentation).
    ahead: Option<Ahead>,
}

/// A replay enqueued before the host asked for it.
struct Ahead {
    started: Started,
    /// The position and token ids it runs.
    offset: usize,
    tokens: Vec<u32>,
}

impl Recorded {
    /// Enqueues the replay for `tokens` at `offset`: the one already ahead if it runs those,
    /// else a new one with its inputs written from the host.
    fn start(&mut self, offset: usize, tokens: &[u32]) -> Result<Started> {
        if let Some(a) = self.ahead.take().filter(|a| a.offset == offset && a.tokens == tokens) {
            return Ok(a.started);
        }
        let bytes: Vec<u8> = tokens.iter().flat_map(|&t| (t as i32).to_ne_bytes()).collect();
        self.replay.write(&self.token, &bytes)?;
        self.replay.write(&self.pos, &(offset as i32).to_ne_bytes())?;
        Ok(self.replay.start()?)
    }

    /// Enqueues, behind the replays enqueued so far, the step for the tokens the latest one
    /// picks (`picks`, known to the host later) at `offset`, if the caches hold that position.
    fn start_ahead(&mut self, offset: usize, picks: Vec<u32>) -> Result<()> {
        self.ahead = None;
        if offset < self.shape.1 {
            self.replay.feed(0, &self.token)?;
            self.replay.write(&self.pos, &(offset as i32).to_ne_bytes())?;
            self.ahead = Some(Ahead { started: self.replay.start()?, offset, tokens: picks });
        }
        Ok(())
    }
}

/// Replays a generation's decode steps where it can (see the module documentation).
pub(crate) struct DecodeGraph {
    recorded: Option<Recorded>,
    /// The caches' (rows, positions) at which a replayable step last ran as usual.
    warmed: Option<(usize, usize)>,
    /// Off for this generation: not asked for, or a step showed it cannot replay.
    off: bool,
}

/// The caches' position and (rows, positions) if a replayable step for `rows` sequences fits:
/// standard caches, all at the same position with the same padding, with room for one more
/// token.
fn room(cache: &[KvCache], rows: usize) -> Option<(usize, (usize, usize))> {
    let first = match cache.first()? {
        KvCache::Standard(s) => s,
        _ => return None,
    };
    let mut at = None;
    for c in cache {
        let KvCache::Standard(s) = c else { return None };
        let k = s.keys.as_ref()?;
        let here = (s.offset, (k.shape()[0], k.shape()[2]));
        if here.1 .0 != rows
            || here.0 >= here.1 .1
            || s.left_padding != first.left_padding
            || at.is_some_and(|a| a != here)
        {
            return None;
        }
        at = Some(here);
    }
    at
}

/// The buffers the caches hold (to see that a step wrote them in place).
fn buffers(cache: &[KvCache]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for c in cache {
        if let KvCache::Standard(s) = c {
            for a in [&s.keys, &s.values].into_iter().flatten() {
                out.push(Arc::as_ptr(&a.data()?.buffer) as usize);
            }
        }
    }
    Ok(out)
}

/// `values` as an i32 array of `shape` computed on the current device (so that on a GPU its
/// bytes live in device memory, where a replay's input must).
fn device_ints(values: Vec<i32>, shape: &[usize]) -> Result<Array> {
    let host = fx::reshape_usize(&Array::from_vec(values), shape)?;
    let a = fx::add(&host, Array::scalar(0i32))?;
    a.eval()?;
    Ok(a)
}

fn set_position(cache: &mut [KvCache], pos: Option<&Array>) {
    for c in cache {
        if let KvCache::Standard(s) = c {
            s.device_pos = pos.cloned();
        }
    }
}

impl DecodeGraph {
    /// A replayer for one generation; `enabled` false (or `FERROX_DECODE_REPLAY=0` in the
    /// environment) turns it off.
    pub(crate) fn new(enabled: bool) -> DecodeGraph {
        let env_off = std::env::var("FERROX_DECODE_REPLAY").is_ok_and(|v| v == "0");
        DecodeGraph { recorded: None, warmed: None, off: !enabled || env_off }
    }

    /// Runs `tokens` (one per row) through `model`, appending to `cache`, and picks each row's
    /// next token greedily — by a replay when one fits — or returns `None` having done
    /// nothing, for the caller to run the step as usual.
    pub(crate) fn step(
        &mut self,
        model: &dyn LanguageModel,
        cache: &mut [KvCache],
        tokens: &[u32],
    ) -> Result<Option<Vec<Sampled>>> {
        if self.off {
            return Ok(None);
        }
        let Some((offset, shape)) = room(cache, tokens.len()) else {
            // The caches grow now: let the recording (and the memory it holds) go.
            self.recorded = None;
            return Ok(None);
        };
        if let Some(r) = self.recorded.as_mut().filter(|r| r.shape == shape) {
            let started = r.start(offset, tokens)?;
            // The picks of the step just enqueued become the next step's tokens on the device.
            // Which they are is known only when it finishes: the step ahead is told below.
            r.start_ahead(offset + 1, Vec::new())?;
            let outs = started.wait()?;
            let picked = read_picks(&outs[0], &outs[1])?;
            if let Some(a) = r.ahead.as_mut() {
                a.tokens = picked.iter().map(|p| p.token).collect();
            }
            for c in cache.iter_mut() {
                if let KvCache::Standard(s) = c {
                    s.offset += 1;
                }
            }
            return Ok(Some(picked));
        }
        self.recorded = None;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tok = device_ints(ids, &[tokens.len(), 1])?;
        let pos = device_ints(vec![offset as i32], &[1])?;
        let before = buffers(cache)?;
        set_position(cache, Some(&pos));
        let logits = model.forward(&tok, Some(cache));
        set_position(cache, None);
        let (t, lp) = greedy_arrays(&logits?)?;
        let replay = if self.warmed == Some(shape) {
            match Replay::record(&[&t, &lp]) {
                Ok(r) => r,
                Err(e) => {
                    // Nothing ran: undo the position and let the caller run the step.
                    if std::env::var_os("FERROX_LOG_REPLAY").is_some() {
                        eprintln!("ferrox: decode steps are not replayed: {e}");
                    }
                    for c in cache.iter_mut() {
                        c.trim(1);
                    }
                    self.off = true;
                    return Ok(None);
                }
            }
        } else {
            fx::eval(&[&t, &lp])?;
            None
        };
        let picked = read_picks(&t, &lp)?;
        if buffers(cache)? != before {
            // The caches were copied, not written in place: a replay would lose the writes.
            if std::env::var_os("FERROX_LOG_REPLAY").is_some() {
                eprintln!("ferrox: decode steps are not replayed: the caches were not written in place");
            }
            self.off = true;
        } else if let Some(replay) = replay {
            if std::env::var_os("FERROX_LOG_REPLAY").is_some() {
                eprintln!(
                    "ferrox: decode step recorded at position {offset} for caches of {shape:?} (rows, positions)"
                );
            }
            let mut r = Recorded { replay, token: tok, pos, shape, ahead: None };
            r.start_ahead(offset + 1, picked.iter().map(|p| p.token).collect())?;
            self.recorded = Some(r);
        }
        self.warmed = Some(shape);
        Ok(Some(picked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{forward, prefill, token_rows};
    use crate::models::Logits;
    use crate::sample::greedy_rows;

    /// The replayable step (on the CPU it is built and evaluated every token: only a GPU
    /// records) picks what the usual step picks, through a cache that fills its first
    /// 256-position block and grows.
    #[test]
    fn device_position_steps_match_the_usual_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-llama");
        let m = crate::load(dir.to_str().unwrap(), None).unwrap();
        let model = m.model.as_ref();
        let prompt = m.tokenizer.encode_prompt("Once upon a time, the fox").unwrap();
        let steps = 256 + 8 - prompt.len();
        let run = |replayable: bool| -> Vec<(u32, f32)> {
            let mut cache = model.make_cache(None);
            let logits = prefill(model, &prompt, &mut cache, 512).unwrap();
            let mut token = logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b }) as u32;
            let mut graph = DecodeGraph::new(replayable);
            let mut out = Vec::new();
            for _ in 0..steps {
                let picked = match graph.step(model, &mut cache, &[token]).unwrap() {
                    Some(mut p) => p.pop().unwrap(),
                    None => {
                        let l =
                            forward(model, &token_rows(&[&[token]]).unwrap(), &mut cache, None, Logits::All).unwrap();
                        greedy_rows(&l).unwrap().pop().unwrap()
                    }
                };
                out.push((picked.token, picked.logprob));
                token = picked.token;
            }
            assert_eq!(cache[0].offset(), prompt.len() + steps);
            out
        };
        let (usual, replayable) = (run(false), run(true));
        assert_eq!(usual.len(), steps);
        for (i, (a, b)) in usual.iter().zip(&replayable).enumerate() {
            assert_eq!(a.0, b.0, "token {i}");
            assert!((a.1 - b.1).abs() < 1e-4, "logprob {i}: {} vs {}", a.1, b.1);
        }
    }
}
