//! Rotating caches (`max_kv_size`, sliding windows) for a batch of sequences.
//!
//! A rotating cache's contents depend on how its sequence arrived (its sink tokens, what each
//! prefill chunk trimmed), so a left-padded batch cannot share one: the padding would become
//! the sink tokens of the shorter rows. Instead each row is prefilled alone into its own
//! rotating caches, numbered from its padding so that every row ends at the same position
//! ([`crate::cache::KvCache::set_start`]; rotary embeddings see only distances), and the
//! rows' caches are then stacked into one [`BatchRotatingCache`] for decoding. There every
//! row keeps its own count and its own write slot — exactly what its cache would do alone —
//! and a mask hides the slots a row has not written yet, so each row attends to what it would
//! attend to alone.

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array};

use crate::cache::{KvCache, RotatingCache, STEP};
use crate::error::{Error, Result};

/// The rotating caches of one layer for a batch of rows, decoded one token at a time.
#[derive(Clone, Debug)]
pub struct BatchRotatingCache {
    /// `[B, H, capacity, D]`; row `b`'s slots are laid out as its own cache's would be.
    pub(crate) keys: Array,
    /// As `keys`.
    pub(crate) values: Array,
    /// The position of the next token, the same for every row.
    pub(crate) position: usize,
    /// Tokens each row has written (its own cache's offset).
    pub(crate) counts: Vec<usize>,
    /// Where each row writes next.
    pub(crate) idx: Vec<usize>,
    max_size: usize,
    keep: usize,
}

impl BatchRotatingCache {
    /// Stacks one rotating cache per row (each already updated one token at a time since its
    /// prefill, so it holds at most `max_size` slots), all with the same size, sink count and
    /// next position.
    pub fn merge(rows: Vec<KvCache>) -> Result<BatchRotatingCache> {
        let rows: Vec<RotatingCache> = rows
            .into_iter()
            .map(|c| match c {
                KvCache::Rotating(r) if r.keys.is_some() => Ok(r),
                _ => Err(Error::Invalid("batch rotating cache: every row needs a filled rotating cache".into())),
            })
            .collect::<Result<_>>()?;
        let first = rows.first().ok_or_else(|| Error::Invalid("batch rotating cache: no rows".into()))?;
        let (max_size, keep, position) = (first.max_size, first.keep, first.start + first.offset);
        if let Some(r) = rows.iter().find(|r| (r.max_size, r.keep, r.start + r.offset) != (max_size, keep, position)) {
            return Err(Error::Invalid(format!(
                "batch rotating cache: rows differ (size {} / {max_size}, sinks {} / {keep}, position {} / {position})",
                r.max_size,
                r.keep,
                r.start + r.offset
            )));
        }
        let slots = |r: &RotatingCache| r.keys.as_ref().map_or(0, |k| k.shape()[2]);
        let capacity = rows.iter().map(slots).max().unwrap_or(0);
        if capacity > max_size {
            return Err(Error::Invalid("batch rotating cache: a row holds more than max_kv_size slots".into()));
        }
        let stack = |part: fn(&RotatingCache) -> &Option<Array>| -> Result<Array> {
            let padded = rows
                .iter()
                .map(|r| {
                    let a = part(r).as_ref().expect("checked above");
                    let s = a.shape();
                    let n = capacity - s[2];
                    if n == 0 {
                        return Ok(a.clone());
                    }
                    Ok(fx::concatenate(&[a.clone(), fx::zeros(&[s[0], s[1], n, s[3]], a.dtype())?], 2)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(fx::concatenate(&padded, 0)?)
        };
        Ok(BatchRotatingCache {
            keys: stack(|r| &r.keys)?,
            values: stack(|r| &r.values)?,
            position,
            counts: rows.iter().map(|r| r.offset).collect(),
            idx: rows.iter().map(|r| r.idx).collect(),
            max_size,
            keep,
        })
    }

    /// Where each row writes its next token, and the capacity the buffers need for that.
    fn next_slots(&self) -> (Vec<usize>, usize) {
        let slots: Vec<usize> = self.idx.iter().map(|&i| if i == self.max_size { self.keep } else { i }).collect();
        let capacity = self.keys.shape()[2];
        let needed = slots.iter().map(|&s| s + 1).max().unwrap_or(0);
        if needed > capacity {
            (slots, (capacity + STEP).min(self.max_size).max(needed))
        } else {
            (slots, capacity)
        }
    }

    /// How many slots each row's queries see once the next token is written.
    pub(crate) fn visible(&self) -> Vec<usize> {
        let (_, capacity) = self.next_slots();
        self.counts.iter().map(|&c| (c + 1).min(capacity)).collect()
    }

    /// The mask of the next token's query: `[B, 1, 1, capacity]`, each row seeing the slots it
    /// has written. A window narrower than the cache is not supported here.
    pub(crate) fn mask(&self, n: usize, window: Option<usize>) -> Result<SdpaMask> {
        if n != 1 {
            return Err(Error::Invalid("batch rotating cache: rows are prefilled one by one, then decoded".into()));
        }
        if window.is_some_and(|w| w < self.max_size) {
            return Err(Error::Invalid("batch rotating cache: a window narrower than the cache".into()));
        }
        let (_, capacity) = self.next_slots();
        let seen: Vec<bool> = self.visible().iter().flat_map(|&v| (0..capacity).map(move |s| s < v)).collect();
        Ok(SdpaMask::Array(Array::from_slice(&seen, &[self.counts.len(), 1, 1, capacity])?))
    }

    /// Writes one token per row (`[B, H, 1, D]`) into each row's slot and returns every slot.
    pub(crate) fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let b = self.counts.len();
        if keys.shape()[2] != 1 || keys.shape()[0] != b {
            return Err(Error::Invalid(format!(
                "batch rotating cache: expected one token for each of {b} rows, got keys {:?}",
                keys.shape()
            )));
        }
        let (slots, capacity) = self.next_slots();
        let grow = capacity - self.keys.shape()[2];
        let write = |buf: &Array, new: &Array| -> Result<Array> {
            let mut buf = buf.clone();
            if grow > 0 {
                let s = buf.shape().to_vec();
                let more = fx::zeros(&[s[0], s[1], grow, s[3]], buf.dtype())?;
                buf = fx::concatenate(&[buf, more], 2)?;
            }
            if slots.iter().all(|&s| s == slots[0]) {
                let s = buf.shape();
                let start = [0, 0, slots[0] as isize, 0];
                let stop = [s[0] as isize, s[1] as isize, slots[0] as isize + 1, s[3] as isize];
                return Ok(fx::slice_update(&buf, new, &start, &stop, &[1, 1, 1, 1])?);
            }
            let at = Array::from_vec(slots.iter().map(|&s| s as i32).collect::<Vec<_>>());
            let at = fx::reshape_usize(&at, &[b, 1, 1, 1])?;
            Ok(fx::put_along_axis(&buf, &at, new, Some(2))?)
        };
        self.keys = write(&self.keys, keys)?;
        self.values = write(&self.values, values)?;
        for ((c, i), s) in self.counts.iter_mut().zip(&mut self.idx).zip(&slots) {
            *c += 1;
            *i = s + 1;
        }
        self.position += 1;
        Ok((self.keys.clone(), self.values.clone()))
    }
}
