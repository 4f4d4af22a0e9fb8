import json
import math
from pathlib import Path

import numpy as np
import pytest

from darkraw.errors import DarkrawError
from darkraw.synth import noiselevel
from darkraw.synth.noise import load_profile
from darkraw.synth.noiselevel import (
    NoiseDatabase,
    RawNoise,
    estimate_raw_noise,
    find_darktable_database,
    noise_for_frame,
)

from conftest import smooth_scene

REAL_DATABASE = Path("/tmp/dt/usr/share/darktable/noiseprofiles.json")


def profile(iso, a, b, **extra):
    return {"name": f"iso {iso}", "iso": iso, "a": a, "b": b, **extra}


def sony_profiles():
    return [
        profile(100, [3e-6, 1e-6, 2e-6], [3e-9, 1e-9, 2e-9]),
        profile(400, [9e-6, 4e-6, 6e-6], [9e-9, 4e-9, 6e-9]),
        profile(400, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),  # repeated ISO: the first one counts
        profile(800, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], skip=True),
        profile(1600, [3e-5, 2e-5, 2.5e-5], [3e-8, 2e-8, 2.5e-8]),
    ]


def tiny_database(**changes):
    """A darktable-layout file: Sony ILCE-7M3 and two Canon bodies, one of them with no usable
    profile."""
    data = {
        "version": 0,
        "noiseprofiles": [
            {
                "maker": "Sony",
                "models": [
                    {"comment": "test", "model": "ILCE-7M3", "profiles": sony_profiles()},
                ],
            },
            {
                "maker": "Canon",
                "models": [
                    {
                        "model": "EOS 5D Mark IV",
                        "profiles": [profile(3200, [5e-5, 4e-5, 6e-5], [1e-7, 2e-7, 3e-7])],
                    },
                    {
                        "model": "EOS 6D",
                        "profiles": [profile(100, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], skip=True)],
                    },
                ],
            },
            {
                "maker": "Pentax",
                "models": [
                    {"model": "K-70", "profiles": [profile(800, [1e-5] * 3, [1e-8] * 3)]},
                ],
            },
        ],
    }
    data.update(changes)
    return data


@pytest.fixture
def database_file(tmp_path):
    def write(data=None, text=None):
        path = tmp_path / "noiseprofiles.json"
        path.write_text(text if text is not None else json.dumps(data if data else tiny_database()))
        return path

    return write


def noise(shot=(1e-4, 2e-4, 3e-4, 4e-4), read=(1e-6, 2e-6, 3e-6, 4e-6)):
    return RawNoise(shot=shot, read=read, source="test")


# --- RawNoise ----------------------------------------------------------------------------


def test_amplified_multiplies_shot_by_ratio_and_read_by_its_square():
    out = noise().amplified(100.0)
    assert out.shot == pytest.approx((1e-2, 2e-2, 3e-2, 4e-2))
    assert out.read == pytest.approx((1e-2, 2e-2, 3e-2, 4e-2))
    assert out.source == "test"


def test_amplified_noise_matches_the_variance_of_an_amplified_frame():
    n = RawNoise(shot=(2e-3,) * 4, read=(1e-5,) * 4, source="test")
    rng = np.random.default_rng(0)
    x = 0.05
    frame = n.shot[0] * rng.poisson(x / n.shot[0], 200_000) + rng.normal(0, 1e-5**0.5, 200_000)
    amplified = n.amplified(8.0)
    expected = amplified.shot[0] * (8.0 * x) + amplified.read[0]
    assert np.var(8.0 * frame) == pytest.approx(expected, rel=0.02)


def test_scaled_multiplies_variances_by_strength_squared():
    out = noise().scaled(0.5)
    assert out.shot == pytest.approx((0.25e-4, 0.5e-4, 0.75e-4, 1e-4))
    assert out.read == pytest.approx((0.25e-6, 0.5e-6, 0.75e-6, 1e-6))
    zero = noise().scaled(0.0)
    assert zero.shot == (0.0,) * 4
    assert zero.read == (0.0,) * 4


@pytest.mark.parametrize("strength", [-0.1, math.nan, math.inf])
def test_scaled_rejects_negative_or_non_finite_strength(strength):
    with pytest.raises(ValueError, match="strength must be a number >= 0"):
        noise().scaled(strength)


@pytest.mark.parametrize("ratio", [0.0, -2.0, math.nan])
def test_amplified_rejects_a_ratio_that_is_not_positive(ratio):
    with pytest.raises(ValueError, match="ratio must be a positive number"):
        noise().amplified(ratio)


def test_raw_noise_checks_its_values():
    with pytest.raises(ValueError, match="shot must have 4 values"):
        RawNoise(shot=(1.0, 2.0, 3.0), read=(0.0,) * 4, source="x")
    with pytest.raises(ValueError, match="read must be finite and non-negative"):
        RawNoise(shot=(0.0,) * 4, read=(0.0, -1e-6, 0.0, 0.0), source="x")


def test_describe_shows_the_green_planes_and_the_source():
    line = noise().describe()
    assert line == "shot 3.0e-04, read 3.0e-06 (green; test)"


# --- darktable profiles ------------------------------------------------------------------


def test_load_reads_the_darktable_layout(database_file):
    db = NoiseDatabase.load(database_file())
    assert len(db) == 3  # EOS 6D has only a skipped profile
    found = db.lookup("Sony", "ILCE-7M3", 400)
    assert found is not None
    # every plane gets darktable's green; the repeated ISO 400 keeps its first profile
    assert found.shot == (4e-6,) * 4
    assert found.read == (4e-9,) * 4
    assert found.source == "darktable profile Sony ILCE-7M3, ISO 400"


def test_skipped_profile_is_not_used(database_file):
    db = NoiseDatabase.load(database_file())
    at_800 = db.lookup("Sony", "ILCE-7M3", 800)
    assert at_800 is not None
    assert at_800.shot[1] == pytest.approx(4e-6 + (800 - 400) / (1600 - 400) * (2e-5 - 4e-6))
    assert db.lookup("Canon", "EOS 6D", 100) is None


@pytest.mark.parametrize(
    ("make", "model"),
    [
        ("Sony", "ILCE-7M3"),
        ("SONY", "ILCE-7M3"),
        ("sony ", "  ilce-7m3 "),
        ("Sony", "ILCE - 7M3"),
        ("Sony Corporation", "SONY ILCE-7M3"),
    ],
)
def test_camera_matches_ignoring_case_whitespace_and_maker_prefix(database_file, make, model):
    found = NoiseDatabase.load(database_file()).lookup(make, model, 100)
    assert found is not None
    assert found.shot[1] == 1e-6


@pytest.mark.parametrize(
    ("make", "model", "iso", "expected"),
    [
        ("Canon", "Canon EOS 5D Mark IV", 3200, 4e-5),
        ("CANON", "EOS 5D MARK IV", 3200, 4e-5),
        ("RICOH IMAGING COMPANY, LTD.", "PENTAX K-70", 800, 1e-5),
    ],
)
def test_exif_style_names_match(database_file, make, model, iso, expected):
    found = NoiseDatabase.load(database_file()).lookup(make, model, iso)
    assert found is not None
    assert found.shot == (expected,) * 4


@pytest.mark.parametrize(
    ("make", "model", "iso"),
    [
        ("Sony", "ILCE-7M4", 100),  # another camera
        ("Canon", "ILCE-7M3", 100),  # the model under another maker
        ("Sony", "7M3", 100),  # a part of the name is not the name
        (None, "ILCE-7M3", 100),
        ("Sony", None, 100),
        ("Sony", "ILCE-7M3", None),
        ("Sony", "ILCE-7M3", 0.0),
        ("Sony", "ILCE-7M3", math.nan),
    ],
)
def test_unknown_camera_or_missing_metadata_gives_none(database_file, make, model, iso):
    assert NoiseDatabase.load(database_file()).lookup(make, model, iso) is None


def test_iso_between_profiles_is_interpolated_linearly(database_file):
    found = NoiseDatabase.load(database_file()).lookup("Sony", "ILCE-7M3", 200)
    assert found is not None
    t = (200 - 100) / (400 - 100)
    assert found.shot == pytest.approx(((1 - t) * 1e-6 + t * 4e-6,) * 4)
    assert found.read == pytest.approx(((1 - t) * 1e-9 + t * 4e-9,) * 4)
    assert "interpolated from ISO 100 and 400" in found.source


def test_iso_outside_the_profiled_range_takes_the_nearest_profile(database_file):
    db = NoiseDatabase.load(database_file())
    low, high = db.lookup("Sony", "ILCE-7M3", 50), db.lookup("Sony", "ILCE-7M3", 25600)
    assert low is not None and high is not None
    assert low.shot == (1e-6,) * 4
    assert high.shot == (2e-5,) * 4
    assert high.read == (2e-8,) * 4
    assert "ISO 1600 (nearest to ISO 25600)" in high.source


def test_negative_values_are_clamped_and_non_finite_profiles_skipped(database_file):
    text = json.dumps(
        tiny_database(
            noiseprofiles=[
                {
                    "maker": "Sony",
                    "models": [
                        {
                            "model": "ILCE-7M3",
                            "profiles": [
                                profile(100, [1e-6, 2e-6, 1e-6], [1e-9, -5e-9, 1e-9]),
                                profile(200, [1e-6, "NAN", 1e-6], [1e-9, 1e-9, 1e-9]),
                                profile(400, [1e-6, 1e300, 1e-6], [1e-9, 1e-9, 1e-9]),
                                profile(800, [1e-6, 8e-6, 1e-6], [1e-9, 8e-9, 1e-9]),
                            ],
                        }
                    ],
                }
            ]
        )
    )
    # JSON literals darktable's parser would choke on, which Python reads as nan and inf
    text = text.replace('"NAN"', "NaN").replace("1e+300", "1e999")
    db = NoiseDatabase.load(database_file(text=text))
    at_100 = db.lookup("Sony", "ILCE-7M3", 100)
    assert at_100 is not None
    assert at_100.read == (0.0,) * 4
    # ISO 200 and 400 are gone: 400 is interpolated between 100 and 800
    at_400 = db.lookup("Sony", "ILCE-7M3", 400)
    assert at_400 is not None
    assert at_400.shot[1] == pytest.approx(2e-6 + (400 - 100) / (800 - 100) * 6e-6)


def test_bad_json_names_the_file(database_file):
    path = database_file(text='{"version": 0, "noiseprofiles": [')
    with pytest.raises(DarkrawError, match="not valid JSON") as info:
        NoiseDatabase.load(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_missing_file_is_a_darkraw_error(tmp_path):
    with pytest.raises(DarkrawError, match="cannot read darktable noise profiles"):
        NoiseDatabase.load(tmp_path / "absent.json")


def _broken_profile(**fields):
    data = tiny_database()
    data["noiseprofiles"][0]["models"][0]["profiles"][1].update(fields)
    return data


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ([1, 2], "top level"),
        ({"noiseprofiles": []}, "version: missing"),
        (tiny_database(version=3), "version: darkraw reads version 0, got 3"),
        ({"version": 0}, "noiseprofiles: expected a list"),
        (tiny_database(noiseprofiles=[{"maker": 7, "models": []}]), "noiseprofiles[0].maker"),
        (
            tiny_database(noiseprofiles=[{"maker": "Sony", "models": [{"model": "A"}]}]),
            "noiseprofiles[0].models[0].profiles: expected a list",
        ),
        (_broken_profile(a=[1e-6, 2e-6]), "noiseprofiles[0].models[0].profiles[1].a:"),
        (_broken_profile(b=[1e-6, "x", 2e-6]), "noiseprofiles[0].models[0].profiles[1].b[1]:"),
        (_broken_profile(iso="400"), "noiseprofiles[0].models[0].profiles[1].iso:"),
        (_broken_profile(skip="yes"), "noiseprofiles[0].models[0].profiles[1].skip:"),
    ],
)
def test_bad_layout_is_a_one_line_error_naming_the_key(database_file, data, key):
    path = database_file(text=json.dumps(data))
    with pytest.raises(DarkrawError) as info:
        NoiseDatabase.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a darktable noise profile file: ")
    assert key in message
    assert "\n" not in message


def test_find_darktable_database_prefers_the_environment(tmp_path, monkeypatch):
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    standard = tmp_path / "standard.json"
    standard.write_text("{}")
    monkeypatch.setattr(noiselevel, "DARKTABLE_NOISEPROFILE_PATHS", (tmp_path / "no", standard))
    monkeypatch.setenv("DARKRAW_DARKTABLE_NOISEPROFILES", str(mine))
    assert find_darktable_database() == mine
    monkeypatch.setenv("DARKRAW_DARKTABLE_NOISEPROFILES", str(tmp_path / "missing.json"))
    assert find_darktable_database() == standard
    monkeypatch.setattr(noiselevel, "DARKTABLE_NOISEPROFILE_PATHS", (tmp_path / "no",))
    assert find_darktable_database() is None


def _real_database() -> Path | None:
    return REAL_DATABASE if REAL_DATABASE.is_file() else find_darktable_database()


@pytest.mark.skipif(
    _real_database() is None,
    reason="darktable's noiseprofiles.json is not installed (nor unpacked under /tmp/dt)",
)
def test_real_darktable_database():
    path = _real_database()
    assert path is not None
    db = NoiseDatabase.load(path)
    assert len(db) > 300
    found = db.lookup("SONY", "ILCE-7M3", 12800)
    assert found is not None
    assert found.shot[1] == pytest.approx(1.13e-4, rel=0.01)
    assert found.source == "darktable profile Sony ILCE-7M3, ISO 12800"


# --- estimation from the frame -----------------------------------------------------------


def noisy_frame(shot, read, level, size=256, seed=0):
    """A smooth scene at mean brightness ``0.4 * level`` as four planes, and Poisson-Gaussian
    noise with variance ``shot * x + read``."""
    clean = level * smooth_scene(size, size, seed=seed)[[0, 1, 2, 1]]
    rng = np.random.default_rng(seed + 100)
    noisy = shot * rng.poisson(clean / shot) + rng.normal(0.0, math.sqrt(read), clean.shape)
    return noisy.astype(np.float32), clean


SETTINGS = [
    (shot, read, level)
    for shot in (1e-4, 1e-3, 1e-2)
    for read in (1e-6, 1e-5, 1e-4)
    for level in (0.05, 0.2, 0.8)
]


def assert_material_terms_recovered(found, shot, read, clean):
    """Each term's variance within 20 % wherever it makes at least 10 % of the variance at the
    frame's mean level (a smaller term is not identifiable from one frame); returns how many
    terms were checked."""
    mean = float(clean.mean())
    total = shot * mean + read
    checked = 0
    if shot * mean >= 0.1 * total:
        assert found.shot[0] == pytest.approx(shot, rel=0.2)
        checked += 1
    if read >= 0.1 * total:
        assert found.read[0] == pytest.approx(read, rel=0.2)
        checked += 1
    return checked


@pytest.mark.parametrize(("shot", "read", "level"), SETTINGS)
def test_estimate_recovers_known_shot_and_read_noise(shot, read, level):
    frame, clean = noisy_frame(shot, read, level)
    found = estimate_raw_noise(frame)
    assert found.source == "estimated from the frame"
    assert len(set(found.shot)) == 1 and len(set(found.read)) == 1  # pooled over the planes
    assert assert_material_terms_recovered(found, shot, read, clean) >= 1


@pytest.mark.parametrize(
    ("shot", "read", "level"),
    [(1e-3, 1e-5, 0.05), (1e-4, 1e-6, 0.02), (1e-3, 1e-4, 2.0), (1e-2, 1e-3, 3.0)],
)
def test_estimate_leaves_out_clipped_pixels(shot, read, level):
    """Clipped at black (as some cameras and black-subtracted DNGs store it) or saturated: with
    the clipped pixels kept, the first case's read comes out 41 % low and the last two's shot 0."""
    frame, clean = noisy_frame(shot, read, level)
    frame = np.clip(frame, 0.0, 1.0)
    assert np.mean(frame == 0.0) + np.mean(frame == 1.0) > 0.02
    assert assert_material_terms_recovered(estimate_raw_noise(frame), shot, read, clean) >= 1


def test_estimate_of_a_flat_frame_is_no_noise():
    found = estimate_raw_noise(np.full((4, 32, 32), 0.25, dtype=np.float32))
    assert found.shot == (0.0,) * 4
    assert found.read == (0.0,) * 4


def test_estimate_of_a_tiny_frame_gives_read_noise_only():
    rng = np.random.default_rng(1)
    found = estimate_raw_noise(rng.normal(0.3, 0.01, (4, 8, 8)).astype(np.float32))
    assert found.shot == (0.0,) * 4
    assert 0 < found.read[0] < 1e-3


@pytest.mark.parametrize("shape", [(3, 32, 32), (32, 32), (4, 32, 32, 1)])
def test_estimate_rejects_planes_of_another_shape(shape):
    with pytest.raises(ValueError, match=r"expected packed Bayer planes of shape \(4, h, w\)"):
        estimate_raw_noise(np.zeros(shape, dtype=np.float32))


def test_estimate_rejects_too_small_or_non_finite_planes():
    with pytest.raises(ValueError, match="too small"):
        estimate_raw_noise(np.zeros((4, 7, 32), dtype=np.float32))
    planes = np.zeros((4, 32, 32), dtype=np.float32)
    planes[2, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimate_raw_noise(planes)


# --- noise_for_frame ---------------------------------------------------------------------


def test_noise_for_frame_prefers_the_database(database_file):
    frame, _ = noisy_frame(1e-3, 1e-5, 0.2, size=64)
    db = NoiseDatabase.load(database_file())
    found = noise_for_frame(frame, "SONY", "ILCE-7M3", 1600, db)
    assert found.source.startswith("darktable profile Sony ILCE-7M3")
    assert found.shot == (2e-5,) * 4


@pytest.mark.parametrize(
    ("make", "model", "iso", "use_database"),
    [
        ("SONY", "ILCE-7M3", 1600, False),
        ("GoPro", "HERO7 Black", 100, True),
        ("SONY", "ILCE-7M3", None, True),
    ],
)
def test_noise_for_frame_falls_back_to_the_estimate(database_file, make, model, iso, use_database):
    frame, _ = noisy_frame(1e-3, 1e-5, 0.2, size=128)
    db = NoiseDatabase.load(database_file()) if use_database else None
    found = noise_for_frame(frame, make, model, iso, db)
    assert found.source == "estimated from the frame"
    assert found.shot[0] == pytest.approx(1e-3, rel=0.2)


def test_noise_for_frame_checks_the_planes_even_when_the_database_knows(database_file):
    db = NoiseDatabase.load(database_file())
    with pytest.raises(ValueError, match="expected packed Bayer planes"):
        noise_for_frame(np.zeros((3, 16, 16)), "Sony", "ILCE-7M3", 100, db)


# --- Black-level offset ------------------------------------------------------------------


#: A dark 14-bit frame: 1 DN per electron, 3 DN of read noise; offsets of a few DN.
DN = 1 / 16383
READ_STD = 3 * DN
TOLERANCE = READ_STD / 3


def frame_with_black(offset, *, black_share=0.25, level=20 * DN, seed=0):
    """Planes of a smooth scene at ``level`` and above, with the left ``black_share`` of the frame
    black, Poisson-Gaussian noise, and ``offset`` (shares of white) added per plane."""
    shot, read = DN, READ_STD**2
    rng = np.random.default_rng(seed)
    clean = level + 0.5 * level * (1 + smooth_scene(128, 128, seed)[[0, 1, 2, 1]])
    clean[:, :, : int(128 * black_share)] = 0.0
    noisy = clean + rng.normal(0.0, 1.0, clean.shape) * np.sqrt(shot * clean + read)
    return (noisy + np.asarray(offset)[:, None, None]).astype(np.float32)


WIDE = noiselevel.BlackOffsetRange((-0.01,) * 4, (0.01,) * 4, "test")


def test_black_offset_recovers_a_known_offset_per_plane():
    offset = (4 * DN, -2 * DN, 1 * DN, 0.0)
    found = noiselevel.estimate_black_offset(frame_with_black(offset), WIDE)
    np.testing.assert_allclose(found, offset, atol=TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_black_offset_of_a_frame_without_bias_is_zero(seed):
    found = noiselevel.estimate_black_offset(frame_with_black((0.0,) * 4, seed=seed), WIDE)
    np.testing.assert_allclose(found, 0.0, atol=TOLERANCE)


def test_a_frame_with_no_black_is_changed_by_at_most_the_bound():
    planes = frame_with_black((0.0,) * 4, black_share=0.0)
    assert min(noiselevel.measure_black_level(planes)) > 15 * DN  # the scene's own dark level
    for limits in (
        noiselevel.BlackOffsetRange.fixed(),
        noiselevel.BlackOffsetRange.fixed(3.0, lower_only=False),
    ):
        found = noiselevel.estimate_black_offset(planes, limits)
        assert found == limits.high


def test_default_range_corrects_only_black_read_low():
    low = noiselevel.estimate_black_offset(frame_with_black((-1 * DN,) * 4))
    np.testing.assert_allclose(low, -1 * DN, atol=TOLERANCE)
    assert noiselevel.estimate_black_offset(frame_with_black((1 * DN,) * 4)) == (0.0,) * 4
    far = noiselevel.estimate_black_offset(frame_with_black((-10 * DN,) * 4))
    assert far == (-noiselevel.DEFAULT_OFFSET_BOUND_DN / noiselevel.OFFSET_DN_WHITE,) * 4


@pytest.mark.parametrize(
    ("make", "model", "name"),
    [
        ("SONY", "ILCE-7SM2", "SonyA7S2"),
        ("NIKON CORPORATION", "NIKON D850", "NikonD850"),
        ("Canon", "Canon EOS 5D Mark IV", "CanonEOS5D4"),
        ("Canon", "Canon EOS REBEL T5i", "CanonEOS700D"),
        ("GoPro", "HERO7 Black", None),
        ("Sony", "ILCE-7M3", None),
        (None, "NIKON D850", None),
    ],
)
def test_calibrated_camera_matches_make_and_model(make, model, name):
    profile = noiselevel.calibrated_camera(make, model)
    assert (profile.name if profile else None) == name


def test_calibration_range_runs_from_the_lowest_bias_to_the_mean():
    limits = noiselevel.black_offset_range("SONY", "ILCE-7SM2", 16383.0)
    rows = np.asarray(load_profile("SonyA7S2").color_bias) / 16383.0
    np.testing.assert_allclose(limits.low, rows.min(axis=0))
    np.testing.assert_allclose(limits.high, rows.mean(axis=0))
    assert limits.source == "SonyA7S2 calibration"
    # A frame with no black takes the mean; one whose black reads low, its own level.
    assert (
        noiselevel.estimate_black_offset(frame_with_black((0.0,) * 4, black_share=0), limits)
        == limits.high
    )
    found = noiselevel.estimate_black_offset(frame_with_black((-1.2 * DN,) * 4), limits)
    np.testing.assert_allclose(found, -1.2 * DN, atol=TOLERANCE)


def test_black_offset_range_checks_its_values():
    with pytest.raises(ValueError, match="above high"):
        noiselevel.BlackOffsetRange((0.1,) * 4, (0.0,) * 4, "x")
    with pytest.raises(ValueError, match="4 finite"):
        noiselevel.BlackOffsetRange((0.0,) * 3, (0.0,) * 4, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected packed Bayer planes"):
        noiselevel.estimate_black_offset(np.zeros((3, 16, 16), dtype=np.float32))
