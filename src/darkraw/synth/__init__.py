"""Simulated low light: camera noise models and profiles, unprocessing of photos into raw,
darkening of clean frames, the sources they come from, and writing dark/clean pairs to disk.

Imports :mod:`darkraw.classic`, :mod:`darkraw.raw` and the leaves.
"""
