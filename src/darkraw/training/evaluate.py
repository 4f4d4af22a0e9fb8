"""Measuring methods on (dark, reference) pairs: PSNR and SSIM per image and per ratio.

Two ways of reporting, because published numbers differ by them (SID issues #23, #52):
SID's, on images quantised to 8 bits as they would be saved as PNG, and on the float images.
SSIM is the Gaussian-window SSIM of Wang et al. (11x11, sigma 1.5) over the RGB channels
(torchmetrics). A method is any function from a dark mosaic, its metadata and the exposure
ratio to an sRGB image; the classic pipeline and trained networks are both methods.
Colour error is CIEDE2000 in CIELAB (Sharma, Wu & Dalal, Color Res. Appl. 30(1), 2005).

A raw method (the raw denoiser) also hands back the clean packed planes it rendered, and is
scored in the raw domain as well, as ELD (Wei et al., CVPR 2020), PMN (Feng et al., MM 2022) and
LED (Jin et al., ICCV 2023) report: its planes (black subtracted, white 1, amplified) against
the long exposure's (black subtracted, white 1, clipped to [0, 1]), both packed as
:func:`~darkraw.classic.pipeline.pack` packs them; PSNR on [0, 1], SSIM per plane, averaged.

Outputs of :func:`evaluate` in its folder: ``results.jsonl`` (one line per method and image;
a rerun skips what is already there), ``table.md``, ``table.csv`` and ``table.json`` (methods x
ratios), ``sheet.png`` (input | each method | reference for a few images) and ``report.html``,
a self-contained page with the table and the images.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import (
    ClassicOptions,
    GammaCurve,
    gamma_decode,
    orient,
    pack,
    run_classic,
    subtract_black_level,
)
from darkraw.errors import DarkrawError
from darkraw.nn.inputs import network_input
from darkraw.raw.figures import preview_planes, side_by_side
from darkraw.raw.fileio import atomic_output, quantize, write_image
from darkraw.raw.metadata import XYZ_FROM_SRGB, RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.training.sid import SIDPair, ground_truth

#: A method: (mosaic in DN, metadata, exposure ratio) -> (3, H, W) sRGB in [0, 1], oriented.
Method = Callable[[np.ndarray, RawMetadata, float], np.ndarray]


@dataclass(frozen=True)
class RawOutput:
    """What a raw method gives: its picture and the clean planes it was rendered from.

    Attributes:
        image: ``(3, H, W)`` sRGB in [0, 1], oriented, as a :data:`Method` returns it.
        planes_lin: ``(4, h, w)`` packed Bayer planes as :func:`raw_planes` makes them from
            the file's mosaic: black subtracted, white 1, amplified by the ratio.
    """

    image: np.ndarray
    planes_lin: np.ndarray


#: A raw method: as :data:`Method`, and scored in the raw domain too (:func:`raw_scores`).
RawMethod = Callable[[np.ndarray, RawMetadata, float], RawOutput]


def classic_method(denoiser: Denoiser | str = Denoiser.NLM) -> Method:
    """The traditional pipeline at the pair's ratio, LibRaw's gamma (as SID's ground truth)."""

    def run(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
        options = ClassicOptions(ratio=ratio, denoiser=Denoiser.parse(denoiser))
        return run_classic(mosaic_dn, meta, options).image

    return run


@dataclass(frozen=True)
class Scores:
    """PSNR (dB) and SSIM of one image, on 8-bit quantised images and on float images."""

    psnr8: float
    ssim8: float
    psnr: float
    ssim: float


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two ``(3, H, W)`` images in [0, 1] (the output is clipped first)."""
    _check_pair(output, reference)
    diff = np.clip(output, 0.0, 1.0).astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else float(-10.0 * np.log10(mse))


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (Gaussian 11x11 window, sigma 1.5, data range 1) of ``(3, H, W)`` images (the
    output is clipped first)."""
    _check_pair(output, reference)
    a = torch.from_numpy(np.clip(output, 0.0, 1.0).astype(np.float32))[None]
    b = torch.from_numpy(reference.astype(np.float32))[None]
    return float(ssim_tensor(a, b))


def ssim_tensor(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of ``(N, 3, H, W)`` tensors as :func:`ssim`, unclipped and differentiable
    (the training loss's SSIM term)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    value = structural_similarity_index_measure(output, reference, data_range=1.0)
    if isinstance(value, tuple):  # only when full images are asked for, which they are not
        value = value[0]
    return value


def ssim_by_texture(output: np.ndarray, reference: np.ndarray, parts: int = 2) -> list[float]:
    """SSIM of ``(3, H, W)`` images within equal-area parts of the reference, flattest first.

    Texture is the local variance of the reference's channel mean in SSIM's own window, so the
    parts show where a method's SSIM is won or lost: residual noise costs most in flat areas
    (sky, walls), lost detail in textured ones. The parts' mean is :func:`ssim`.
    """
    _check_pair(output, reference)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    from torchmetrics.functional.image import structural_similarity_index_measure

    a = torch.from_numpy(np.clip(output, 0.0, 1.0).astype(np.float32))[None]
    b = torch.from_numpy(reference.astype(np.float32))[None]
    _, full = structural_similarity_index_measure(a, b, data_range=1.0, return_full_image=True)
    ssim_map = full[0].mean(dim=0).numpy()
    luma = reference.mean(axis=0, dtype=np.float64)
    texture = _gaussian_window(luma * luma) - _gaussian_window(luma) ** 2
    # A stable sort splits ties (a constant reference) into equal parts too.
    order = np.argsort(texture, axis=None, kind="stable")
    return [float(ssim_map.ravel()[chunk].mean()) for chunk in np.array_split(order, parts)]


def _gaussian_window(image: np.ndarray) -> np.ndarray:
    """``image`` filtered with SSIM's window (11x11 Gaussian, sigma 1.5), reflected borders."""
    import cv2

    return np.asarray(
        cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT_101), np.float64
    )


def score(output: np.ndarray, reference: np.ndarray) -> Scores:
    """Both reportings: 8-bit (as saved to PNG, SID's tables) and float."""
    out8 = quantize(np.clip(output, 0, 1), 8).astype(np.float32) / 255
    ref8 = quantize(reference, 8).astype(np.float32) / 255
    return Scores(
        psnr(out8, ref8), ssim(out8, ref8), psnr(output, reference), ssim(output, reference)
    )


def _check_pair(output: np.ndarray, reference: np.ndarray) -> None:
    if output.shape != reference.shape or output.ndim != 3 or output.shape[0] != 3:
        raise ValueError(
            f"expected two (3, H, W) images of one size, got {output.shape} and {reference.shape}"
        )


def raw_planes(mosaic_dn: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """A Bayer mosaic's ``raw_lin`` planes as the raw scores compare them: black subtracted,
    white 1, packed R, G1, B, G2 (:func:`~darkraw.classic.pipeline.pack`), not clipped.

    Args:
        mosaic_dn: ``(H, W)`` in DN.

    Returns:
        ``(4, ceil(H/2), ceil(W/2))`` float32.
    """
    if meta.is_xtrans:
        raise ValueError("raw-domain scores are for Bayer mosaics, got an X-Trans one")
    return pack(subtract_black_level(mosaic_dn, meta), meta)


@dataclass(frozen=True)
class RawScores:
    """Raw-domain PSNR (dB) and SSIM of one image (ELD's, PMN's and LED's reporting)."""

    psnr: float
    ssim: float


def raw_scores(planes_lin: np.ndarray, reference_lin: np.ndarray) -> RawScores:
    """PSNR on [0, 1] and SSIM per plane, averaged, of packed raw planes.

    Both are clipped to [0, 1] first (a long exposure's planes clip at white, and noise below
    black is not signal). SSIM is :func:`ssim`'s Gaussian window, plane by plane.

    Args:
        planes_lin: ``(P, h, w)`` a method's planes.
        reference_lin: ``(P, h, w)`` the long exposure's planes.
    """
    if planes_lin.shape != reference_lin.shape or planes_lin.ndim != 3:
        raise ValueError(
            f"expected two (P, h, w) packed planes of one size, got {planes_lin.shape} and "
            f"{reference_lin.shape}"
        )
    from torchmetrics.functional.image import structural_similarity_index_measure

    output = np.clip(planes_lin, 0.0, 1.0).astype(np.float64)
    reference = np.clip(reference_lin, 0.0, 1.0).astype(np.float64)
    mse = float(np.mean((output - reference) ** 2))
    value = float("inf") if mse == 0 else float(-10.0 * np.log10(mse))
    # One plane per batch item: SSIM per plane, never a window across planes.
    a = torch.from_numpy(output.astype(np.float32))[:, None]
    b = torch.from_numpy(reference.astype(np.float32))[:, None]
    per_plane = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    if isinstance(per_plane, tuple):  # only when full images are asked for, which they are not
        per_plane = per_plane[0]
    return RawScores(value, float(per_plane.mean()))


#: CIE D65 white (2-degree observer) that CIELAB is relative to.
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
#: CIE's exact constants for CIELAB's linear segment near black: (6/29)^3 and (29/3)^3.
_LAB_EPSILON = 216 / 24389
_LAB_KAPPA = 24389 / 27
#: Pixels per chunk in :func:`mean_ciede2000`. A whole 12-Mpixel image would need gigabytes of
#: float64 temporaries; chunks this small keep them in cache, measured 3x faster than 2^18.
_CHUNK_PIXELS = 1 << 14


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of gamma-encoded sRGB.

    The sRGB curve is decoded exactly (IEC 61966-2-1, linear below 0.04045), the linear values
    go to XYZ by :data:`darkraw.raw.metadata.XYZ_FROM_SRGB` and XYZ to CIELAB with the white
    ``(0.95047, 1.0, 1.08883)``. That white and the matrix's own white differ in the fifth
    decimal, so sRGB white lands within 0.005 of ``(100, 0, 0)``.

    Args:
        image: ``(3, H, W)`` (any ``(3, ...)``) sRGB in [0, 1]; values outside are clipped.

    Returns:
        ``(3, H, W)`` float64: ``L*`` in [0, 100], ``a*`` and ``b*``.
    """
    if image.ndim < 1 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) sRGB image, got {image.shape}")
    rgb_lin = gamma_decode(np.asarray(image, dtype=np.float64), GammaCurve.SRGB)
    # The matrix divided by the white gives XYZ already relative to the white, in one product.
    xyz_rel = np.tensordot(XYZ_FROM_SRGB / _D65_WHITE[:, None], rgb_lin, axes=1)
    f = np.where(xyz_rel > _LAB_EPSILON, np.cbrt(xyz_rel), (_LAB_KAPPA * xyz_rel + 16) / 116)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB colours, elementwise (``kL = kC = kH = 1``).

    Follows Sharma, Wu & Dalal (2005), equations 1-22, hue edge cases included: the hue of a
    colour without chroma is 0, and where either chroma is 0 the hue difference is 0 and the
    mean hue is the sum of the hues.

    Args:
        lab1, lab2: ``(3, ...)`` arrays of one shape, ``L*, a*, b*`` along the first axis.

    Returns:
        ``(...)`` float64 differences, symmetric in the two arguments.
    """
    if lab1.shape != lab2.shape or lab1.ndim < 1 or lab1.shape[0] != 3:
        raise ValueError(
            f"expected two (3, ...) Lab arrays of one shape, got {lab1.shape} and {lab2.shape}"
        )
    l1, a1, b1 = np.asarray(lab1, dtype=np.float64)
    l2, a2, b2 = np.asarray(lab2, dtype=np.float64)
    # a* is stretched near neutral (G), where CIELAB's hues are spaced too tightly. Chromas are
    # square roots, not np.hypot: Lab values cannot overflow, and hypot is ten times slower.
    g = 0.5 * (1 - _chroma_weight((np.sqrt(a1**2 + b1**2) + np.sqrt(a2**2 + b2**2)) / 2))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.sqrt(a1p**2 + b1**2), np.sqrt(a2p**2 + b2**2)
    h1p, h2p = _hue_degrees(b1, a1p, c1p), _hue_degrees(b2, a2p, c2p)

    chroma_product = c1p * c2p
    neutral = chroma_product == 0
    # Hues lie on a circle: 350 and 10 are 20 apart, not 340.
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(neutral, 0.0, dh)
    d_hue = 2 * np.sqrt(chroma_product) * np.sin(np.radians(dh / 2))

    # Mean hue, also the short way round: the arithmetic mean of 350 and 10 is 180, not 0.
    h_sum = h1p + h2p
    wrapped = np.where(h_sum < 360, h_sum + 360, h_sum - 360)
    h_bar = np.where(np.abs(h1p - h2p) > 180, wrapped, h_sum) / 2
    h_bar = np.where(neutral, h_sum, h_bar)
    t = _hue_weight(h_bar)
    c_bar = (c1p + c2p) / 2
    l50 = ((l1 + l2) / 2 - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * c_bar
    s_h = 1 + 0.015 * c_bar * t
    # The rotation term corrects the tilt of CIELAB's ellipses in the blue region (~275 deg).
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_t = -2 * _chroma_weight(c_bar) * np.sin(np.radians(2 * d_theta))
    term_l = (l2 - l1) / s_l
    term_c = (c2p - c1p) / s_c
    term_h = d_hue / s_h
    return np.asarray(np.sqrt(term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h))


def _chroma_weight(chroma: np.ndarray) -> np.ndarray:
    """``sqrt(C^7 / (C^7 + 25^7))``, the chroma dependence shared by ``G`` and ``R_C``."""
    c7 = chroma**7
    return np.asarray(np.sqrt(c7 / (c7 + 25.0**7)))


def _hue_weight(h_bar: np.ndarray) -> np.ndarray:
    """The paper's ``T(h_bar)`` (equation 15), ``h_bar`` in degrees.

    ``1 - 0.17 cos(h - 30) + 0.24 cos(2h) + 0.32 cos(3h + 6) - 0.20 cos(4h - 63)``, evaluated
    from one cosine and one sine by the multiple-angle identities: numpy's float64 cosine is
    slow, and the four cosines took half the time of the whole difference.
    """
    rad = np.radians(h_bar)
    cos1, sin1 = np.cos(rad), np.sin(rad)
    cos2, sin2 = 2 * cos1 * cos1 - 1, 2 * sin1 * cos1
    cos3, sin3 = cos1 * (2 * cos2 - 1), sin1 * (2 * cos2 + 1)
    cos4, sin4 = 2 * cos2 * cos2 - 1, 2 * sin2 * cos2
    return np.asarray(
        1
        - 0.17 * (cos1 * math.cos(math.radians(30)) + sin1 * math.sin(math.radians(30)))
        + 0.24 * cos2
        + 0.32 * (cos3 * math.cos(math.radians(6)) - sin3 * math.sin(math.radians(6)))
        - 0.20 * (cos4 * math.cos(math.radians(63)) + sin4 * math.sin(math.radians(63)))
    )


def _hue_degrees(b: np.ndarray, a: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Hue angle in [0, 360] degrees; 0 where the chroma is 0, as the paper defines it."""
    hue = np.degrees(np.arctan2(b, a))
    # arctan2 of signed zeros can give 180: the paper's convention makes grey's hue 0.
    return np.where(chroma == 0, 0.0, np.where(hue < 0, hue + 360, hue))


def mean_ciede2000(output: np.ndarray, reference: np.ndarray) -> float:
    """Mean CIEDE2000 between two ``(3, H, W)`` sRGB images in [0, 1], the colour-error figure.

    Both images are clipped to [0, 1] (the output as the other metrics clip it; the reference
    is in range already). Rows go through in chunks of about 2^14 pixels, so the extra memory is
    about 4 MB whatever the size: a 12-Mpixel pair takes 2.3-3 s on one core of a shared
    2-core AMD EPYC machine (measured; float32 or float64 inputs).

    Raises:
        ValueError: the images are not ``(3, H, W)`` of one size (naming both shapes), or empty.
    """
    _check_pair(output, reference)
    height, width = int(output.shape[1]), int(output.shape[2])
    if height * width == 0:
        raise ValueError(f"expected non-empty images, got {output.shape}")
    rows = max(1, _CHUNK_PIXELS // width)
    total = 0.0
    for top in range(0, height, rows):
        out_lab = srgb_to_lab(output[:, top : top + rows])
        ref_lab = srgb_to_lab(reference[:, top : top + rows])
        total += float(ciede2000(out_lab, ref_lab).sum())
    return total / (height * width)


@dataclass(frozen=True)
class Record:
    """One method on one image."""

    method: str
    pair: str
    scene: int
    ratio: int
    psnr8: float
    ssim8: float
    psnr: float
    ssim: float
    seconds: float
    raw_psnr: float | None = None
    raw_ssim: float | None = None


@dataclass(frozen=True)
class EvaluationResult:
    """Every record and where the reports are."""

    records: list[Record]
    table: dict[str, dict[str, dict[str, float]]]
    folder: Path


def evaluate(
    pairs: Sequence[SIDPair],
    methods: Mapping[str, Method | RawMethod],
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    sheet_images: int = 4,
    progress: bool = True,
) -> EvaluationResult:
    """Run every method on every pair and write the tables, sheet and HTML report.

    Args:
        pairs: (short, long) pairs, e.g. from :func:`darkraw.training.sid.read_list` and
            :func:`darkraw.training.sid.select`.
        methods: name -> method; a :data:`RawMethod` is scored in the raw domain too.
        out_dir: report folder (created).
        cache_dir: where rendered ground truths are cached (default ``out_dir/ground_truth``).
        sheet_images: how many pairs appear in the comparison sheet and report.

    Raises:
        DarkrawError: an unreadable pair file (naming it), or a raw method's pair whose long
            exposure is not the short one's size.
    """
    if not pairs or not methods:
        raise ValueError("need at least one pair and one method")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "ground_truth"
    done = _read_done(out / "results.jsonl")
    records = [r for r in done.values() if r.method in methods]
    shown = {p.short.name for p in pairs[:sheet_images]}
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    bar = tqdm(total=len(pairs) * len(methods), disable=not progress, desc="evaluate")
    for pair in pairs:
        todo = [m for m in methods if (m, pair.short.name) not in done]
        need_panels = pair.short.name in shown and not (out / "sheet.png").exists()
        if not todo and not need_panels:
            bar.update(len(methods))
            continue
        raw = read_raw(pair.short)
        reference = ground_truth(pair.long, cache)
        reference_lin: np.ndarray | None = None
        if pair.short.name in shown:
            preview = _preview(raw.mosaic, raw.meta, pair.ratio)
            panels[pair.short.name] = [(f"input x{pair.ratio:g}", preview)]
        for name, method in methods.items():
            if name not in todo and not need_panels:
                bar.update(1)
                continue
            started = time.perf_counter()
            output = method(raw.mosaic, raw.meta, pair.ratio)
            seconds = time.perf_counter() - started
            image = output.image if isinstance(output, RawOutput) else output
            if image.shape != reference.shape:
                raise DarkrawError(
                    pair.short, f"{name} gave {image.shape}, the reference is {reference.shape}"
                )
            if name in todo:
                scores = score(image, reference)
                raw_figures: RawScores | None = None
                if isinstance(output, RawOutput):
                    if reference_lin is None:
                        reference_lin = _long_planes(pair, raw.meta)
                    if output.planes_lin.shape != reference_lin.shape:
                        raise DarkrawError(
                            pair.short,
                            f"{name} gave planes {output.planes_lin.shape}, the long exposure's "
                            f"are {reference_lin.shape}",
                        )
                    raw_figures = raw_scores(output.planes_lin, reference_lin)
                record = Record(
                    name,
                    pair.short.name,
                    pair.scene,
                    pair.ratio_class,
                    scores.psnr8,
                    scores.ssim8,
                    scores.psnr,
                    scores.ssim,
                    seconds,
                    None if raw_figures is None else raw_figures.psnr,
                    None if raw_figures is None else raw_figures.ssim,
                )
                records.append(record)
                with open(out / "results.jsonl", "a") as log:
                    log.write(json.dumps(asdict(record)) + "\n")
            if pair.short.name in panels:
                panels[pair.short.name].append((name, image))
            bar.update(1)
        if pair.short.name in panels:
            panels[pair.short.name].append(("reference", reference))
    bar.close()
    table = summarize(records)
    write_tables(table, out)
    if panels:
        write_image(out / "sheet.png", _sheet(list(panels.values())))
    write_report(table, records, out)
    return EvaluationResult(records, table, out)


def _long_planes(pair: SIDPair, short_meta: RawMetadata) -> np.ndarray:
    """The long exposure's planes as the raw scores compare them: :func:`raw_planes`, clipped to
    [0, 1] (ELD's target)."""
    long = read_raw(pair.long)
    if (long.meta.height, long.meta.width) != (short_meta.height, short_meta.width) or (
        long.meta.cfa_tile != short_meta.cfa_tile
    ):
        raise DarkrawError(
            pair.long,
            f"the long exposure is {long.meta.height}x{long.meta.width} "
            f"{long.meta.cfa_name}, the short one {short_meta.height}x{short_meta.width} "
            f"{short_meta.cfa_name}: no raw-domain scores",
        )
    return np.asarray(np.clip(raw_planes(long.mosaic, long.meta), 0.0, 1.0), np.float32)


def _preview(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
    """The dark frame as the network sees it, roughly viewable (packed, green averaged)."""
    full = preview_planes(network_input(mosaic_dn, meta, ratio))[:, : meta.height, : meta.width]
    return orient(full, meta.flip)


def _sheet(rows: list[list[tuple[str, np.ndarray]]]) -> np.ndarray:
    strips = [side_by_side(row, max_width=2400) for row in rows]
    width = max(s.shape[2] for s in strips)
    padded = [
        np.pad(s, ((0, 0), (0, 8), (0, width - s.shape[2])), constant_values=1.0) for s in strips
    ]
    return np.concatenate(padded, axis=1)


def _read_done(path: Path) -> dict[tuple[str, str], Record]:
    done: dict[tuple[str, str], Record] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            record = Record(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut by a kill: that image is measured again
        done[(record.method, record.pair)] = record
    return done


def summarize(records: Sequence[Record]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean scores per method and ratio (``"x100"``...) and over all (``"all"``).

    A group whose every image has raw-domain scores also has ``raw_psnr`` and ``raw_ssim``.
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(r.method for r in records):
        mine = [r for r in records if r.method == method]
        ratios = sorted({r.ratio for r in mine})
        groups = {f"x{ratio}": [r for r in mine if r.ratio == ratio] for ratio in ratios}
        groups["all"] = mine
        table[method] = {key: _means(rows) for key, rows in groups.items()}
    return table


def _means(rows: Sequence[Record]) -> dict[str, float]:
    means = {
        "psnr8": float(np.mean([r.psnr8 for r in rows])),
        "ssim8": float(np.mean([r.ssim8 for r in rows])),
        "psnr": float(np.mean([r.psnr for r in rows])),
        "ssim": float(np.mean([r.ssim for r in rows])),
        "images": float(len(rows)),
    }
    raw_psnr = [r.raw_psnr for r in rows if r.raw_psnr is not None]
    raw_ssim = [r.raw_ssim for r in rows if r.raw_ssim is not None]
    if len(raw_psnr) == len(raw_ssim) == len(rows):
        means["raw_psnr"] = float(np.mean(raw_psnr))
        means["raw_ssim"] = float(np.mean(raw_ssim))
    return means


def _ratio_columns(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    ratios = {k for row in table.values() for k in row if k != "all"}
    return [*sorted(ratios, key=lambda k: float(k[1:])), "all"]


def markdown_table(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Methods x ratios, ``PSNR / SSIM`` on 8-bit images (SID's reporting)."""
    columns = _ratio_columns(table)
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, row in table.items():
        cells = [
            f"{row[c]['psnr8']:.2f} / {row[c]['ssim8']:.3f}" if c in row else "-" for c in columns
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _has_raw(row: Mapping[str, Mapping[str, float]]) -> bool:
    return "raw_psnr" in row.get("all", {})


def raw_markdown_table(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Methods with raw-domain scores x ratios, ``PSNR / SSIM`` on packed raw planes (ELD's,
    PMN's and LED's reporting); ``""`` when no method has them."""
    rows = {method: row for method, row in table.items() if _has_raw(row)}
    if not rows:
        return ""
    columns = _ratio_columns(rows)
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, row in rows.items():
        cells = [
            f"{row[c]['raw_psnr']:.2f} / {row[c]['raw_ssim']:.3f}" if c in row else "-"
            for c in columns
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(table: Mapping[str, Mapping[str, Mapping[str, float]]], out: Path) -> None:
    """``table.md``, ``table.csv`` and ``table.json`` in ``out``, each written atomically."""
    raw = raw_markdown_table(table)
    if raw:
        raw = (
            "\nRaw-domain PSNR (dB) / SSIM on packed raw planes against the long exposure's "
            "(ELD's, PMN's and LED's reporting).\n\n" + raw
        )
    with atomic_output(out / "table.md") as tmp:
        tmp.write_text(
            "PSNR (dB) / SSIM on 8-bit sRGB images (SID's reporting); float figures in "
            "table.json and table.csv.\n\n" + markdown_table(table) + raw
        )
    with atomic_output(out / "table.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    with atomic_output(out / "table.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["method", "ratio", "psnr8", "ssim8", "psnr", "ssim", "images"]
        writer.writerow([*header, "raw_psnr", "raw_ssim"])
        for method, row in table.items():
            for ratio, s in row.items():
                writer.writerow(
                    [
                        method,
                        ratio,
                        f"{s['psnr8']:.4f}",
                        f"{s['ssim8']:.5f}",
                        f"{s['psnr']:.4f}",
                        f"{s['ssim']:.5f}",
                        int(s["images"]),
                        f"{s['raw_psnr']:.4f}" if "raw_psnr" in s else "",
                        f"{s['raw_ssim']:.5f}" if "raw_ssim" in s else "",
                    ]
                )


def write_report(
    table: Mapping[str, Mapping[str, Mapping[str, float]]], records: Sequence[Record], out: Path
) -> Path:
    """A self-contained HTML page: the table, the comparison sheet, and every image's scores."""
    sheet = out / "sheet.png"
    image_html = ""
    if sheet.exists():
        from PIL import Image

        with Image.open(sheet) as im:
            im.thumbnail((2400, 2400))
            buffer = io.BytesIO()
            im.convert("RGB").save(buffer, format="JPEG", quality=90)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        image_html = (
            '<h2>Comparison</h2><img alt="comparison sheet" style="max-width:100%" '
            f'src="data:image/jpeg;base64,{data}">'
        )
    columns = _ratio_columns(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = ""
    for method, row in table.items():
        cells = "".join(
            f"<td>{row[c]['psnr8']:.2f} / {row[c]['ssim8']:.3f}</td>" if c in row else "<td>-</td>"
            for c in columns
        )
        body += f"<tr><th>{html.escape(method)}</th>{cells}</tr>"
    raw_html = ""
    raw_rows = {method: row for method, row in table.items() if _has_raw(row)}
    if raw_rows:
        raw_body = ""
        for method, row in raw_rows.items():
            cells = "".join(
                f"<td>{row[c]['raw_psnr']:.2f} / {row[c]['raw_ssim']:.3f}</td>"
                if c in row
                else "<td>-</td>"
                for c in columns
            )
            raw_body += f"<tr><th>{html.escape(method)}</th>{cells}</tr>"
        raw_html = (
            "<p>Raw-domain PSNR (dB) / SSIM on packed raw planes (black subtracted, white 1) "
            "against the long exposure's, as ELD, PMN and LED report.</p>"
            f"<table><tr><th>method</th>{head}</tr>{raw_body}</table>"
        )
    per_image = "".join(
        f"<tr><td>{html.escape(r.method)}</td><td>{html.escape(r.pair)}</td><td>x{r.ratio}</td>"
        f"<td>{r.psnr8:.2f}</td><td>{r.ssim8:.3f}</td><td>{r.psnr:.2f}</td><td>{r.ssim:.3f}</td>"
        f"<td>{_cell(r.raw_psnr, 2)}</td><td>{_cell(r.raw_ssim, 3)}</td>"
        f"<td>{r.seconds:.1f}</td></tr>"
        for r in records
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>darkraw evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>darkraw evaluation</h1>
<p>PSNR (dB) / SSIM on 8-bit sRGB images against the long exposure rendered by LibRaw.</p>
<table><tr><th>method</th>{head}</tr>{body}</table>
{raw_html}
{image_html}
<h2>Every image</h2>
<table><tr><th>method</th><th>pair</th><th>ratio</th><th>PSNR 8-bit</th><th>SSIM 8-bit</th>
<th>PSNR float</th><th>SSIM float</th><th>PSNR raw</th><th>SSIM raw</th><th>seconds</th></tr>
{per_image}</table>
</body></html>
"""
    path = out / "report.html"
    with atomic_output(path) as tmp:
        tmp.write_text(page)
    return path


def _cell(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"
