import numpy as np
import pytest

from darkraw.classic.denoise import (
    Denoiser,
    NoiseLevel,
    anscombe,
    denoise_planes,
    estimate_noise,
    inverse_anscombe,
    negligible_shot_as_gaussian,
    resolve_denoiser,
)

from conftest import psnr, smooth_scene

SHOT, READ = 0.01, 2e-4


def noisy_planes(seed=0, size=(4, 96, 128)):
    rng = np.random.default_rng(seed)
    clean = np.stack([smooth_scene(*size[1:], seed=seed + c)[c % 3] for c in range(size[0])])
    clean = clean.astype(np.float32)
    noisy = SHOT * rng.poisson(clean / SHOT) + rng.normal(0, np.sqrt(READ), clean.shape)
    return clean, noisy.astype(np.float32)


def test_estimate_noise_recovers_poisson_gaussian_parameters():
    _, noisy = noisy_planes()
    level = estimate_noise(noisy)
    assert level.shot == pytest.approx(SHOT, rel=0.15)
    # Read noise is small next to shot noise over this range, so it is known less precisely.
    assert level.read == pytest.approx(READ, abs=2e-4)


def test_estimate_noise_of_clean_image_is_small():
    clean, _ = noisy_planes()
    level = estimate_noise(clean)
    assert level.shot < SHOT / 20 and level.read < READ / 5


def test_anscombe_stabilizes_variance_to_one():
    rng = np.random.default_rng(1)
    level = NoiseLevel(SHOT, READ)
    for mean in (0.02, 0.2, 0.8):
        x = SHOT * rng.poisson(mean / SHOT, 200_000) + rng.normal(0, np.sqrt(READ), 200_000)
        assert np.std(anscombe(x, level)) == pytest.approx(1.0, abs=0.06)


def test_inverse_anscombe_is_unbiased():
    rng = np.random.default_rng(2)
    level = NoiseLevel(SHOT, READ)
    for mean in (0.05, 0.3):
        x = SHOT * rng.poisson(mean / SHOT, 100_000) + rng.normal(0, np.sqrt(READ), 100_000)
        back = inverse_anscombe(np.full(1, np.mean(anscombe(x, level))), level)
        assert back[0] == pytest.approx(mean, rel=0.02)


@pytest.mark.parametrize("method", ["nlm", "bm3d"])
def test_denoising_improves_psnr(method):
    clean, noisy = noisy_planes(size=(1, 64, 64))
    out = denoise_planes(noisy, method)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(out, clean) > psnr(noisy, clean) + 5


def test_none_is_a_copy_and_auto_picks_by_size():
    _, noisy = noisy_planes(size=(1, 16, 16))
    out = denoise_planes(noisy, "none")
    np.testing.assert_array_equal(out, noisy)
    assert out is not noisy
    assert resolve_denoiser("auto", 1000) is Denoiser.BM3D
    assert resolve_denoiser("auto", 10**8) is Denoiser.NLM
    with pytest.raises(ValueError, match="unknown denoiser 'wavelet'"):
        Denoiser.parse("wavelet")


@pytest.mark.parametrize("method", ["nlm", "bm3d"])
def test_a_tiny_shot_term_does_not_break_the_denoiser(method):
    """A fit to a flat field can give shot 1e-9 beside read 2e-3: the Anscombe transform of
    such a model is all rounding error in float32, and the denoiser returned the noise."""
    rng = np.random.default_rng(0)
    noisy = 0.05 + rng.normal(0, np.sqrt(2e-3), (4, 48, 48)).astype(np.float32)
    out = denoise_planes(noisy, method, noise=NoiseLevel(shot=1e-9, read=2e-3))
    assert out.std() < 0.25 * noisy.std()
    assert abs(float(out.mean()) - 0.05) < 0.01


def test_negligible_shot_noise_becomes_gaussian():
    assert negligible_shot_as_gaussian(NoiseLevel(1e-9, 2e-3), 1.0) == NoiseLevel(0.0, 2e-3)
    kept = NoiseLevel(SHOT, READ)
    assert negligible_shot_as_gaussian(kept, 1.0) == kept
    # Negligible at the frame's peak, and no further.
    assert negligible_shot_as_gaussian(NoiseLevel(1e-4, 2e-3), 0.5).shot == 0.0
    assert negligible_shot_as_gaussian(NoiseLevel(1e-4, 2e-3), 5.0).shot == 1e-4
