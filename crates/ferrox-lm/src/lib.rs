//! ferrox-lm
