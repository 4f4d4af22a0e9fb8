"""One entry for enhancing a mosaic with whichever network is given: the raw denoiser
(:mod:`darkraw.nn.rawdenoise`, the default) or the seed's SID U-Net (:mod:`darkraw.nn.infer`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import InferenceOptions, Network, NetworkResult, enhance_raw_network
from darkraw.nn.rawdenoise import DenoisedResult, DenoiseOptions, enhance_with_denoiser
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noiselevel import NoiseDatabase


def enhance_mosaic(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    network: Network,
    ratio: float | None = None,
    *,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    source: str | Path | None = None,
    database: NoiseDatabase | None = None,
) -> NetworkResult | DenoisedResult:
    """Enhance a raw mosaic with ``network``.

    Args:
        mosaic_dn: ``(H, W)`` mosaic in DN; ``meta`` its metadata.
        network: a raw denoiser or a SID U-Net.
        ratio: amplification; ``None`` chooses one from the image.
        inference: how a SID network runs (tiles, precision, self-ensemble).
        denoise: how the raw denoiser runs (strength, renderer, tiles, precision).
        source: the file the mosaic came from (the denoiser's LibRaw renderer reads it).
        database: camera noise profiles for the denoiser (else the noise is estimated).

    Raises:
        ValueError: options for the other kind of network, or a file the network cannot take.
    """
    if isinstance(network, RawDenoiser):
        if inference is not None:
            raise ValueError("inference options are for the SID network; give denoise options")
        options = denoise or DenoiseOptions()
        return enhance_with_denoiser(
            mosaic_dn, meta, network, ratio, options, source=source, database=database
        )
    if denoise is not None:
        raise ValueError("denoise options are for the raw denoiser; give inference options")
    return enhance_raw_network(mosaic_dn, meta, network, ratio, inference or InferenceOptions())
