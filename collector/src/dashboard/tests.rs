//! Dashboard routes through the real store.
