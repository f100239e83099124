//! [`Params`]: the flat, dotted-path map of arrays that modules, optimizers and checkpoints
//! share.

use std::collections::BTreeMap;

use ferrox::Array;

/// Parameters (or gradients, or optimizer state) by dotted path, e.g.
/// `layers.0.mlp.up_proj.weight`; iterated in key order.
pub type Params = BTreeMap<String, Array>;
