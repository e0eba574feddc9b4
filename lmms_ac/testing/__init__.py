"""Builders of tiny, randomly initialised checkpoints and datasets in the real formats.

Used by the tests, the offline demo and the benchmarks: nothing here touches a hub.
"""
