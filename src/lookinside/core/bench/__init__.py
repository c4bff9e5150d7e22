"""Timing generation: the local benchmark per KV-cache mode, its statistics, and the streamed one over any backend."""
