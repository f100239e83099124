//! ferrox-nn
