"""The traditional pipeline of the seed paper (black level, amplification, denoising, white
balance, demosaicing, colour matrix, tone curve) and its denoisers (BM3D, non-local means).

Imports :mod:`darkraw.raw` and the leaves only.
"""
