//! Choosing the next token: logits processors (logit bias, repetition / presence / frequency
//! penalties over a window of recent tokens), then filters on the log-probabilities (top-p,
//! min-p, XTC, top-k, in mlx-lm's order), then a draw at temperature `temp` (0 is greedy) from
//! a seeded generator, so the same seed gives the same tokens.
//!
//! Sampling runs on the host over one row of logits: the model's last-position logits are read
//! back every step anyway to decide whether to stop.

use ferrox as fx;

use crate::error::{Error, Result};

/// Sampling settings; the defaults are greedy decoding with no penalties.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Temperature; 0 picks the most likely token.
    pub temp: f32,
    /// Nucleus sampling: keep the most likely tokens whose probability adds up to `top_p`
    /// (0 or 1 turns it off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 turns it off).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one (0 turns it off)...
    pub min_p: f32,
    /// ...but always keep at least this many.
    pub min_tokens_to_keep: usize,
    /// XTC ("exclude top choices"): with this probability per step...
    pub xtc_probability: f32,
    /// ...remove every token above this probability except the least likely of them.
    pub xtc_threshold: f32,
    /// Tokens XTC never removes (typically the EOS ids and a newline).
    pub xtc_special_tokens: Vec<u32>,
    /// Multiplicative penalty (> 1 discourages) on tokens seen in the last
    /// `repetition_context_size` tokens: positive logits are divided, negative multiplied.
    pub repetition_penalty: Option<f32>,
    /// The window of [`SamplerConfig::repetition_penalty`].
    pub repetition_context_size: usize,
    /// Subtracted once from the logit of every token present in the last
    /// `presence_context_size` tokens.
    pub presence_penalty: Option<f32>,
    /// The window of [`SamplerConfig::presence_penalty`].
    pub presence_context_size: usize,
    /// Subtracted from a token's logit once per occurrence in the last
    /// `frequency_context_size` tokens.
    pub frequency_penalty: Option<f32>,
    /// The window of [`SamplerConfig::frequency_penalty`].
    pub frequency_context_size: usize,
    /// Added to the logits of the given tokens.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random generator (a fixed default when `None`, so runs are reproducible).
    pub seed: Option<u64>,
    /// How many of the most likely tokens to report with their log-probabilities.
    pub top_logprobs: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.0,
            top_p: 0.0,
            top_k: 0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            xtc_probability: 0.0,
            xtc_threshold: 0.0,
            xtc_special_tokens: vec![],
            repetition_penalty: None,
            repetition_context_size: 20,
            presence_penalty: None,
            presence_context_size: 20,
            frequency_penalty: None,
            frequency_context_size: 20,
            logit_bias: vec![],
            seed: None,
            top_logprobs: 0,
        }
    }
}

/// One sampled token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: u32,
    /// Its log-probability under the processed logits (before top-k/top-p/... filtering and
    /// temperature, as mlx-lm reports it).
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first
    /// ([`SamplerConfig::top_logprobs`] of them).
    pub top_logprobs: Vec<(u32, f32)>,
}

/// A seeded sampler.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// Checks `config` and seeds the generator.
    pub fn new(config: SamplerConfig) -> Result<Sampler> {
        let bad = |m: String| Err(Error::Invalid(m));
        if config.temp.is_nan() || config.temp < 0.0 {
            return bad(format!("temp must be >= 0, got {}", config.temp));
        }
        if !(0.0..=1.0).contains(&config.top_p) {
            return bad(format!("top_p must be in [0, 1], got {}", config.top_p));
        }
        if !(0.0..=1.0).contains(&config.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", config.min_p));
        }
        if config.min_tokens_to_keep < 1 {
            return bad("min_tokens_to_keep must be at least 1".into());
        }
        if !(0.0..=0.5).contains(&config.xtc_threshold) {
            return bad(format!("xtc_threshold must be in [0, 0.5], got {}", config.xtc_threshold));
        }
        if !(0.0..=1.0).contains(&config.xtc_probability) {
            return bad(format!("xtc_probability must be in [0, 1], got {}", config.xtc_probability));
        }
        if config.repetition_penalty.is_some_and(|p| p.is_nan() || p < 0.0) {
            return bad(format!("repetition_penalty must be >= 0, got {:?}", config.repetition_penalty));
        }
        let rng = Rng::new(config.seed.unwrap_or(0));
        Ok(Sampler { config, rng })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// True if a pick needs only the logits' argmax and log-sum-exp: greedy, with no bias or
    /// penalty reshaping the logits and no top log-probabilities asked for. [`greedy_rows`]
    /// then picks what [`Sampler::sample`] would, reading back only ids and log-probabilities.
    pub fn is_plain_greedy(&self) -> bool {
        let c = &self.config;
        let off = |p: Option<f32>| !p.is_some_and(|p| p != 0.0);
        c.temp == 0.0
            && c.logit_bias.is_empty()
            && off(c.repetition_penalty)
            && off(c.presence_penalty)
            && off(c.frequency_penalty)
            && c.top_logprobs == 0
    }

    /// Picks the next token from one row of `logits`, given the tokens so far (`history`,
    /// prompt included) for the penalties. Token ids outside the vocabulary are an error.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<Sampled> {
        let n = logits.len();
        if n == 0 {
            return Err(Error::Invalid("sample: empty logits".into()));
        }
        let check = |t: u32| {
            if (t as usize) < n {
                Ok(t as usize)
            } else {
                Err(Error::Invalid(format!("sample: token id {t} is outside the vocabulary of {n}")))
            }
        };
        let mut x = logits.to_vec();
        let c = &self.config;
        for &(t, b) in &c.logit_bias {
            x[check(t)?] += b;
        }
        let window = |size: usize| &history[history.len().saturating_sub(size)..];
        if let Some(p) = c.repetition_penalty.filter(|&p| p != 0.0) {
            let mut seen = std::collections::HashSet::new();
            for &t in window(c.repetition_context_size) {
                let i = check(t)?;
                if seen.insert(i) {
                    x[i] = if x[i] < 0.0 { x[i] * p } else { x[i] / p };
                }
            }
        }
        if let Some(p) = c.presence_penalty.filter(|&p| p != 0.0) {
            let mut seen = std::collections::HashSet::new();
            for &t in window(c.presence_context_size) {
                let i = check(t)?;
                if seen.insert(i) {
                    x[i] -= p;
                }
            }
        }
        if let Some(p) = c.frequency_penalty.filter(|&p| p != 0.0) {
            for &t in window(c.frequency_context_size) {
                x[check(t)?] -= p;
            }
        }
        let logprobs = log_softmax(&x)?;
        let top_logprobs =
            top_indices(&logprobs, c.top_logprobs).into_iter().map(|i| (i as u32, logprobs[i])).collect();

        let token = if c.temp == 0.0 {
            argmax(&logprobs)
        } else {
            let mut lp = logprobs.clone();
            if c.top_p > 0.0 && c.top_p < 1.0 {
                top_p(&mut lp, c.top_p);
            }
            if c.min_p != 0.0 {
                min_p(&mut lp, c.min_p, c.min_tokens_to_keep);
            }
            if c.xtc_probability > 0.0 && self.rng.uniform() <= c.xtc_probability as f64 {
                xtc(&mut lp, c.xtc_threshold, &c.xtc_special_tokens)?;
            }
            if c.top_k > 0 && c.top_k < n {
                top_k(&mut lp, c.top_k);
            }
            let inv = 1.0 / c.temp;
            for v in &mut lp {
                *v *= inv;
            }
            self.rng.categorical(&lp)
        };
        Ok(Sampled { token: token as u32, logprob: logprobs[token], top_logprobs })
    }
}

/// Greedy picks for each row of `logits` (the vocabulary on the last axis, any float dtype),
/// computed where the logits are — the argmax and the log-sum-exp over the vocabulary, as
/// ops — so that only one id and one log-probability per row come back to the host, not the
/// whole vocabulary's logits (on a GPU: a few bytes instead of 0.5 MB a row, and no host pass
/// over them). The picks of a plain greedy [`Sampler`] ([`Sampler::is_plain_greedy`]); the
/// log-probabilities agree to f32 rounding.
pub fn greedy_rows(logits: &fx::Array) -> Result<Vec<Sampled>> {
    let (token, logprob) = greedy_arrays(logits)?;
    fx::eval(&[&token, &logprob])?;
    read_picks(&token, &logprob)
}

/// The arrays of [`greedy_rows`], not evaluated: each row's id (u32) and log-probability.
pub(crate) fn greedy_arrays(logits: &fx::Array) -> Result<(fx::Array, fx::Array)> {
    let x = fx::astype(logits, fx::Dtype::F32)?;
    let token = fx::argmax(&x, Some(-1), true)?;
    let best = fx::take_along_axis(&x, &token, Some(-1))?;
    let logprob = fx::subtract(&best, &fx::logsumexp(&x, Some(&[-1]), true)?)?;
    Ok((token, logprob))
}

/// The picks of evaluated [`greedy_arrays`].
pub(crate) fn read_picks(token: &fx::Array, logprob: &fx::Array) -> Result<Vec<Sampled>> {
    let (tokens, logprobs) = (token.to_vec::<u32>()?, logprob.to_vec::<f32>()?);
    Ok(tokens
        .into_iter()
        .zip(logprobs)
        .map(|(token, logprob)| Sampled { token, logprob, top_logprobs: vec![] })
        .collect())
}

/// `x - logsumexp(x)`; the log-sum-exp is the core's vectorized reduction (a vocabulary's
/// exponentials one at a time cost a third of a millisecond a token).
pub fn log_softmax(x: &[f32]) -> Result<Vec<f32>> {
    let lse = fx::logsumexp(&fx::Array::from_slice(x, &[x.len()])?, None, false)?.item::<f32>()?;
    if lse == f32::NEG_INFINITY {
        return Ok(x.to_vec());
    }
    Ok(x.iter().map(|&v| v - lse).collect())
}

/// The index of the largest value (the first of ties).
fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values, largest first.
fn top_indices(x: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(x.len());
    if k == 0 {
        return vec![];
    }
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let desc = |a: &usize, b: &usize| x[*b].total_cmp(&x[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, desc);
        idx.truncate(k);
    }
    idx.sort_by(desc);
    idx
}

/// Keeps the `k` most likely tokens.
fn top_k(lp: &mut [f32], k: usize) {
    let keep = top_indices(lp, k);
    let mut mask = vec![false; lp.len()];
    for i in keep {
        mask[i] = true;
    }
    for (v, keep) in lp.iter_mut().zip(mask) {
        if !keep {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Keeps the most likely tokens until their probability reaches `p` of the total (tokens tied
/// with the last one kept stay too).
fn top_p(lp: &mut [f32], p: f32) {
    let mut sorted: Vec<f32> = lp.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().map(|&v| (v as f64).exp()).sum();
    let mut mass = 0.0;
    let mut threshold = sorted[sorted.len() - 1];
    for &v in &sorted {
        mass += (v as f64).exp();
        if mass >= p as f64 * total {
            threshold = v;
            break;
        }
    }
    for v in lp.iter_mut() {
        if *v < threshold {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Drops tokens with probability below `p` times the largest, keeping at least `min_keep`.
fn min_p(lp: &mut [f32], p: f32, min_keep: usize) {
    let top = lp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let cut = top + p.ln();
    let mut keep = vec![false; lp.len()];
    for i in top_indices(lp, min_keep) {
        keep[i] = true;
    }
    for (v, keep) in lp.iter_mut().zip(keep) {
        if *v < cut && !keep {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Removes every token above `threshold` probability except the least likely of them.
fn xtc(lp: &mut [f32], threshold: f32, special: &[u32]) -> Result<()> {
    let probs: Vec<f32> = log_softmax(lp)?.iter().map(|v| v.exp()).collect();
    let floor = probs.iter().copied().filter(|&q| q > threshold).fold(f32::INFINITY, f32::min);
    for (i, (v, &q)) in lp.iter_mut().zip(&probs).enumerate() {
        if q > floor && !special.contains(&(i as u32)) {
            *v = f32::NEG_INFINITY;
        }
    }
    Ok(())
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same on every platform.
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E3779B97F4A7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index drawn with probability proportional to `exp(logits)`.
    fn categorical(&mut self, logits: &[f32]) -> usize {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = logits.iter().map(|&v| ((v - m) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut u = self.uniform() * total;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                last = i;
                if u < w {
                    return i;
                }
                u -= w;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    //! Against mlx-lm's own filters and processors (scripts/make_lm_fixtures.py).
    use super::*;
    use serde_json::Value;

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/sampling.json")).unwrap()
    }

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32)).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_infinite() && w.is_infinite()) || (g - w).abs() <= 1e-5 * (1.0 + w.abs());
            assert!(ok, "{what}[{i}]: got {g}, mlx-lm {w}");
        }
    }

    #[test]
    fn filters_match_mlx_lm() {
        let f = fixture();
        let lp = floats(&f["logprobs"]);
        assert_close(&log_softmax(&floats(&f["logits"])).unwrap(), &lp, "logprobs");
        let run = |name: &str, apply: &dyn Fn(&mut Vec<f32>)| {
            let mut x = lp.clone();
            apply(&mut x);
            assert_close(&x, &floats(&f["filters"][name]), name);
        };
        run("top_p_0.9", &|x| top_p(x, 0.9));
        run("top_p_0.3", &|x| top_p(x, 0.3));
        run("min_p_0.1_keep1", &|x| min_p(x, 0.1, 1));
        run("min_p_0.9_keep3", &|x| min_p(x, 0.9, 3));
        run("top_k_5", &|x| top_k(x, 5));
        run("xtc_0.05", &|x| xtc(x, 0.05, &[7]).unwrap());
    }

    #[test]
    fn processors_match_mlx_lm() {
        let f = fixture();
        let logits = floats(&f["logits"]);
        let history: Vec<u32> = f["history"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let cases: [(&str, SamplerConfig); 4] = [
            (
                "repetition_1.3_ctx4",
                SamplerConfig { repetition_penalty: Some(1.3), repetition_context_size: 4, ..Default::default() },
            ),
            ("presence_0.7_ctx20", SamplerConfig { presence_penalty: Some(0.7), ..Default::default() }),
            (
                "frequency_0.4_ctx6",
                SamplerConfig { frequency_penalty: Some(0.4), frequency_context_size: 6, ..Default::default() },
            ),
            ("bias", SamplerConfig { logit_bias: vec![(2, 5.0), (10, -3.0)], ..Default::default() }),
        ];
        for (name, config) in cases {
            let want = floats(&f["processors"][name]);
            // The processed logits are visible through the chosen token's logprob and the top-k.
            let mut s = Sampler::new(SamplerConfig { top_logprobs: 64, ..config }).unwrap();
            let got = s.sample(&logits, &history).unwrap();
            let want_lp = log_softmax(&want).unwrap();
            assert_eq!(got.token as usize, argmax(&want), "{name}");
            for (t, lp) in got.top_logprobs {
                assert!((lp - want_lp[t as usize]).abs() < 1e-5, "{name}: token {t}: {lp} vs {}", want_lp[t as usize]);
            }
        }
    }

    #[test]
    fn greedy_rows_pick_as_the_greedy_sampler_does() {
        let f = fixture();
        let logits = floats(&f["logits"]);
        let reversed: Vec<f32> = logits.iter().rev().map(|v| 0.5 * v).collect();
        let v = logits.len();
        let rows = fx::Array::from_slice(&[logits, reversed].concat(), &[2, 1, v]).unwrap();
        let rows = fx::astype(&rows, fx::Dtype::Bf16).unwrap();
        let got = greedy_rows(&rows).unwrap();
        assert_eq!(got.len(), 2);
        // The reference reads the same bf16-rounded logits.
        let rounded = rows.to_vec::<f32>().unwrap();
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        assert!(s.is_plain_greedy());
        for (r, g) in rounded.chunks(v).zip(&got) {
            let want = s.sample(r, &[]).unwrap();
            assert_eq!(g.token, want.token);
            assert!((g.logprob - want.logprob).abs() < 1e-5, "{} vs {}", g.logprob, want.logprob);
        }
        let penalized = Sampler::new(SamplerConfig { repetition_penalty: Some(1.1), ..Default::default() }).unwrap();
        assert!(!penalized.is_plain_greedy());
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
        let logits = [0.0f32, 1.0, 2.0, -1.0];
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { temp: 1.0, seed: Some(seed), ..Default::default() }).unwrap();
            (0..20000).map(|_| s.sample(&logits, &[]).unwrap().token).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let p: Vec<f32> = log_softmax(&logits).unwrap().iter().map(|v| v.exp()).collect();
        for (t, &pt) in p.iter().enumerate() {
            let freq = a.iter().filter(|&&x| x as usize == t).count() as f32 / a.len() as f32;
            assert!((freq - pt).abs() < 0.015, "token {t}: frequency {freq} vs probability {pt}");
        }
        // Temperature 0.5 squares the odds: p ∝ exp(2x).
        let mut s = Sampler::new(SamplerConfig { temp: 0.5, seed: Some(1), ..Default::default() }).unwrap();
        let n = 20000;
        let hits = (0..n).filter(|_| s.sample(&logits, &[]).unwrap().token == 2).count() as f32 / n as f32;
        let q = log_softmax(&logits.map(|x| 2.0 * x)).unwrap()[2].exp();
        assert!((hits - q).abs() < 0.015, "{hits} vs {q}");
    }

    #[test]
    fn greedy_logprobs_and_errors() {
        let mut s = Sampler::new(SamplerConfig { top_logprobs: 2, ..Default::default() }).unwrap();
        let got = s.sample(&[0.0, 3.0, 1.0], &[]).unwrap();
        let lp = log_softmax(&[0.0, 3.0, 1.0]).unwrap();
        assert_eq!(got, Sampled { token: 1, logprob: lp[1], top_logprobs: vec![(1, lp[1]), (2, lp[2])] });
        assert!(s.sample(&[0.0; 3], &[5]).is_ok(), "no penalty: history is not read");
        let mut p = Sampler::new(SamplerConfig { presence_penalty: Some(1.0), ..Default::default() }).unwrap();
        assert!(p.sample(&[0.0; 3], &[5]).unwrap_err().to_string().contains("outside the vocabulary"));
        assert!(Sampler::new(SamplerConfig { top_p: 1.5, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplerConfig { temp: -1.0, ..Default::default() }).is_err());
    }
}
