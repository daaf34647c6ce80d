//! igb/igbvf advanced descriptor layouts (filled in with the ring code).
