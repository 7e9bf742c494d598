"""Training-time anomaly synthesis: honest masks for every kind, foreground respected, ratios, preview."""
import numpy as np
import pytest

from prn_edge.config import SynthConfig
from prn_edge.data.blend import changed_pixels
from prn_edge.data.dataset import load_category
from prn_edge.data.fit import fit_image, fit_mask
from prn_edge.data.demo import make_dataset, render_image
from prn_edge.data.images import image_header, write_image
from prn_edge.data.synth import (KINDS, AnomalyGenerator, builtin_textures, estimate_foreground, load_texture_dir,
                                 perlin_mask, synth_preview)
from prn_edge.errors import ConfigError, DataError

SIZE = 64


def _only(kind, **extra):
    """A config that draws only `kind`."""
    ratios = {f"p_{k}": 0.0 for k in KINDS}
    ratios[f"p_{kind}"] = 1.0
    return SynthConfig(**ratios, **extra)


@pytest.fixture(scope="module")
def shots():
    return [render_image("gravel", "shot", i, defect=d, size=SIZE)[1:] for i, d in enumerate(["scratch", "stain"])]


@pytest.fixture(scope="module")
def textures():
    return builtin_textures(SIZE)


def test_perlin_masks_never_empty_with_sane_coverage():
    rng = np.random.default_rng(0)
    cover = []
    for _ in range(40):
        m = perlin_mask((SIZE, 80), rng)
        assert m.shape == (SIZE, 80) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
        cover.append(m.mean())
    assert min(cover) > 0 and max(cover) < 0.5 and 0.01 < np.median(cover) < 0.2
    # a threshold no noise reaches still gives a (small) mask
    assert 0 < perlin_mask((SIZE, SIZE), rng, threshold=5.0).mean() < 0.1


def test_builtin_textures_are_real_photos(textures):
    assert len(textures) >= 10
    assert all(t.shape == (SIZE, SIZE, 3) and t.dtype == np.uint8 and t.std() > 5 for t in textures)


def test_texture_dir(tmp_path):
    write_image(tmp_path / "t" / "a.png", np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    assert [t.shape for t in load_texture_dir(tmp_path / "t", SIZE)] == [(SIZE, SIZE, 3)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_texture_dir(tmp_path / "empty", SIZE)


@pytest.mark.parametrize("kind", ["extended", "simulated", "cutpaste", "shading", "hairline"])
@pytest.mark.parametrize("category", ["grass", "coin"])
def test_each_kind_changes_only_its_mask_inside_foreground(kind, category, shots, textures):
    foreground = "estimate" if category == "coin" else "full"
    gen = AnomalyGenerator(_only(kind), SIZE, shots, textures, foreground)
    rng = np.random.default_rng(1)
    kinds = []
    for i in range(8):
        normal = render_image(category, "train", i, size=SIZE)[1]
        image, mask, got = gen.sample(normal, rng)
        kinds.append(got)
        assert image.dtype == np.uint8 and mask.dtype == np.float32 and image.shape == normal.shape
        changed = changed_pixels(normal, image)
        assert np.array_equal(mask > 0, changed)  # honest: labelled iff visibly changed
        assert np.array_equal(image[mask == 0], normal[mask == 0])
        assert not (mask.astype(bool) & ~gen.foreground_mask(normal)).any()
    assert kinds.count(kind) >= 6  # "normal" only as the rare fallback when nothing visible was drawn


def test_normal_and_real_kinds(shots, textures):
    normal = render_image("grass", "train", 0, size=SIZE)[1]
    image, mask, kind = AnomalyGenerator(_only("normal"), SIZE, shots, textures).sample(normal, np.random.default_rng(0))
    assert kind == "normal" and mask.sum() == 0 and np.array_equal(image, normal)
    image, mask, kind = AnomalyGenerator(_only("real"), SIZE, shots, textures).sample(normal, np.random.default_rng(0))
    assert kind == "real" and any(np.array_equal(image, s[0]) and np.array_equal(mask, s[1]) for s in shots)


def test_ratios_without_shots_drop_real_and_extended(textures):
    gen = AnomalyGenerator(SynthConfig(), SIZE, [], textures)
    rng = np.random.default_rng(0)
    normal = render_image("gravel", "train", 0, size=SIZE)[1]
    kinds = {gen.sample(normal, rng)[2] for _ in range(60)}
    assert kinds <= {"normal", "simulated", "cutpaste", "shading", "hairline"} and "simulated" in kinds
    with pytest.raises(ConfigError, match="no real defect shots"):
        AnomalyGenerator(_only("real"), SIZE, [], textures)


def test_bad_inputs(shots, textures):
    with pytest.raises(DataError, match="shot 0"):
        AnomalyGenerator(SynthConfig(), SIZE + 1, shots, textures)
    with pytest.raises(DataError, match="empty"):
        AnomalyGenerator(SynthConfig(), SIZE, [(shots[0][0], np.zeros((SIZE, SIZE), np.float32))], textures)
    gen = AnomalyGenerator(SynthConfig(), SIZE, shots, textures)
    with pytest.raises(DataError, match="expected 64x64x3"):
        gen.sample(np.zeros((32, 32, 3), np.uint8), np.random.default_rng(0))


def test_estimate_foreground_finds_the_coin_and_leaves_textures_whole():
    coin = render_image("coin", "train", 0, size=128)[1]
    fg = estimate_foreground(coin)
    assert 0.15 < fg.mean() < 0.35 and fg[64, 64] and not fg[2, 2]
    assert estimate_foreground(render_image("gravel", "train", 0, size=128)[1]).all()


def test_preview_writes_a_png(tmp_path):
    make_dataset(tmp_path / "d", categories=["coin"], n_train=3, n_test_good=1, n_test_defect=1, n_shots=2,
                 size=SIZE, progress=False)
    out = synth_preview(load_category(tmp_path / "d" / "coin"), SynthConfig(), tmp_path / "p" / "grid.png", n=5,
                        image_size=SIZE)
    w, h, _ = image_header(out)
    assert w == 3 * SIZE and h > 2 * SIZE


@pytest.mark.parametrize("kind", ["extended", "simulated", "cutpaste", "shading", "hairline", "real"])
def test_a_non_square_input_gets_honest_anomalies_over_its_whole_width(kind, textures):
    wide = (SIZE, 2 * SIZE)

    def fitted(image, mask=None):
        img, where = fit_image(image, wide, "stretch")
        return img if mask is None else (img, fit_mask(mask, where))

    shots = [fitted(*render_image("gravel", "shot", i, defect=d, size=2 * SIZE)[1:])
             for i, d in enumerate(["scratch", "stain"])]
    gen = AnomalyGenerator(_only(kind), wide, shots, textures)
    rng = np.random.default_rng(2)
    union = np.zeros(wide, bool)
    for i in range(10):
        normal = fitted(render_image("grass", "train", i, size=2 * SIZE)[1])
        image, mask, got = gen.sample(normal, rng)
        assert image.shape == (SIZE, 2 * SIZE, 3) and mask.shape == wide and got in (kind, "normal")
        if kind != "real":  # a real shot is shown as it is; a generated anomaly changes exactly its mask
            assert np.array_equal(mask > 0, changed_pixels(normal, image))
            union |= mask > 0
    assert kind == "real" or (union[:, :SIZE].any() and union[:, SIZE:].any())  # all of the long side is used
    assert {t.shape for t in builtin_textures(wide)} == {(2 * SIZE, 2 * SIZE, 3)}  # tiles cover it turned either way
    with pytest.raises(DataError, match=r"expected 64x128x3"):
        gen.sample(np.zeros((2 * SIZE, SIZE, 3), np.uint8), rng)


@pytest.mark.parametrize("kind", ["extended", "simulated", "cutpaste", "shading", "hairline"])
def test_a_user_foreground_mask_keeps_anomalies_on_the_object(kind, shots, textures):
    fg = np.zeros((SIZE, SIZE), np.float32)
    fg[8:40, 20:56] = 1  # the object of an aligned part
    gen = AnomalyGenerator(_only(kind), SIZE, shots, textures, fg)
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(8):
        normal = render_image("grass", "train", i, size=SIZE)[1]
        image, mask, _ = gen.sample(normal, rng)
        assert not (mask.astype(bool) & (fg == 0)).any()
        assert np.array_equal(image[fg == 0], normal[fg == 0])
        hits += int(mask.any())
    assert hits >= 6
    with pytest.raises(ConfigError, match="must be 64x64"):
        AnomalyGenerator(_only(kind), SIZE, shots, textures, np.ones((32, 32), np.float32))


def test_shading_keeps_the_texture_and_changes_a_large_region():
    """A brightness change multiplies the surface: inside the region the texture is still there (correlated with
    the normal image), unlike a foreign fill; and the region is large, not a speck."""
    from prn_edge.data.synth.surface import shading

    rng = np.random.default_rng(3)
    normal = render_image("gravel", "train", 0, size=SIZE)[1]
    fg = np.ones((SIZE, SIZE), bool)
    cover = []
    for _ in range(12):
        effect, alpha = shading(normal, fg, rng, SIZE / 256)
        cover.append((alpha > 0.5).mean())
        inside = alpha > 0.5
        a, b = normal[inside].astype(float).ravel(), effect[inside].ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.8  # the same texture, re-lit or re-contrasted
        assert np.abs(b - a).mean() > 3  # and visibly changed
    assert np.median(cover) > 0.08  # regions, not specks


def test_shading_follows_a_given_region():
    from prn_edge.data.synth.surface import shading

    region = np.zeros((SIZE, SIZE), np.float32)
    region[10:30, 5:40] = 1
    normal = render_image("gravel", "train", 1, size=SIZE)[1]
    _, alpha = shading(normal, np.ones((SIZE, SIZE), bool), np.random.default_rng(0), SIZE / 256, region)
    far = np.ones((SIZE, SIZE), bool)
    far[0:40, 0:50] = False  # beyond the region plus the blur of its edge
    assert alpha[region > 0].mean() > 0.5 and alpha[far].max() < 0.01


def test_hairlines_are_thin():
    """A hairline's mask is a line: a 3x3 erosion removes nearly all of it (a blob would survive)."""
    import cv2

    gen = AnomalyGenerator(_only("hairline"), 128, [], builtin_textures(128))
    rng = np.random.default_rng(0)
    normal = render_image("grass", "train", 2, size=128)[1]
    kept = []
    for _ in range(12):
        _, mask, kind = gen.sample(normal, rng)
        if kind == "hairline":
            kept.append(cv2.erode(mask, np.ones((3, 3), np.uint8)).sum() / mask.sum())
    assert len(kept) >= 10 and np.median(kept) < 0.35
