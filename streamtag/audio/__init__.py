"""Audio as data: decoding and writing files, and generated music-like audio."""
