"""Training-time anomalies (PRN, Sec. 3.4): real shots, extended shots, simulated and cut-paste defects, and
surface changes drawn from the image itself (synth.surface: shading, hairline cracks and scratches).

Every synthetic kind ends in `blend.composite`, so the returned mask is exactly the pixels that
changed by more than blend.VISIBLE_TOL: nothing invisible is labelled defect, nothing changed is not.
"""
from __future__ import annotations

import cv2
import numpy as np

from ...config import SynthConfig
from ...errors import ConfigError, DataError
from ...input_policy import as_hw
from ..blend import composite
from ..draw import point_in
from .foreground import estimate_foreground
from .perlin import perlin_mask
from .surface import hairline, shading
from .textures import builtin_textures, load_texture_dir

KINDS = ("normal", "real", "extended", "simulated", "cutpaste", "shading", "hairline")
TRIES = 5  # redraws when a synthetic defect happens to change no pixel visibly

__all__ = ["KINDS", "AnomalyGenerator", "estimate_foreground"]


def _jitter_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue/saturation shift, then contrast and brightness: uint8 in, uint8 out."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-8, 9)) % 180  # OpenCV hue is 0..179
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.8, 1.2), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.8, 1.2) + mean + rng.uniform(-20, 20)
    return np.clip(out, 0, 255).astype(np.uint8)


def _warp(patch: np.ndarray, alpha: np.ndarray, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (degrees) and scale a patch and its alpha onto a canvas just large enough to hold them."""
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    m[:, 2] += [(nw - w) / 2, (nh - h) / 2]
    out = cv2.warpAffine(patch, m, (max(nw, 1), max(nh, 1)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    a = cv2.warpAffine(alpha, m, (max(nw, 1), max(nh, 1)), flags=cv2.INTER_LINEAR, borderValue=0)
    return out, a


def _paste(base: np.ndarray, patch: np.ndarray, alpha: np.ndarray, centre: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-size (effect, alpha) with the patch centred at (x, y), clipped at the image border."""
    h, w = base.shape[:2]
    ph, pw = alpha.shape
    x0, y0 = centre[0] - pw // 2, centre[1] - ph // 2
    effect = base.copy()
    full = np.zeros((h, w), np.float32)
    sy, sx = slice(max(0, -y0), min(ph, h - y0)), slice(max(0, -x0), min(pw, w - x0))
    dy, dx = slice(max(0, y0), min(h, y0 + ph)), slice(max(0, x0), min(w, x0 + pw))
    effect[dy, dx] = patch[sy, sx]
    full[dy, dx] = alpha[sy, sx]
    return effect, full


def _defect_patch(image: np.ndarray, mask: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The defect's bounding box plus a margin, from a real shot: (uint8 patch, float32 mask patch)."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        raise DataError(f"{where}: the defect mask is empty; every few-shot defect needs a non-empty mask")
    margin = max(4, int(0.15 * max(np.ptp(xs), np.ptp(ys))))
    y0, y1 = max(0, ys.min() - margin), min(mask.shape[0], ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(mask.shape[1], xs.max() + margin + 1)
    return image[y0:y1, x0:x1].copy(), (mask[y0:y1, x0:x1] > 0.5).astype(np.float32)


class AnomalyGenerator:
    """Turns normal images into training samples: (image, mask, kind) with kind in KINDS."""

    def __init__(self, cfg: SynthConfig, image_size: int | tuple[int, int], shots: list[tuple[np.ndarray, np.ndarray]],
                 textures: list[np.ndarray] | None = None, foreground: "str | np.ndarray" = "full") -> None:
        """image_size: the model input, one side (a square) or (height, width); every image and mask given to the
        generator has that size. textures: uint8 RGB photos (synth/textures.py), resized to the input's longer side
        where used."""
        cfg.validate()
        self.hw = hw = as_hw(image_size)
        h, w = hw
        if isinstance(foreground, np.ndarray):  # a user's mask of where the object is (aligned parts)
            if foreground.shape != hw or not foreground.any():
                raise ConfigError(f"foreground mask is {foreground.shape} with {int(np.count_nonzero(foreground))} "
                                  f"pixels set; it must be {h}x{w} (height x width) and mark the object")
            foreground = foreground > 0.5
        elif foreground not in ("full", "estimate"):
            raise ConfigError(f'foreground={foreground!r}: use "full" (textures), "estimate" (objects) or a mask')
        self.cfg, self.foreground = cfg, foreground
        for i, (img, mask) in enumerate(shots):
            if img.shape != (h, w, 3) or img.dtype != np.uint8 or mask.shape != hw:
                raise DataError(f"shot {i}: image {img.shape} {img.dtype} / mask {mask.shape}; expected "
                                f"{h}x{w}x3 uint8 and {h}x{w} (height x width; read shots with "
                                f"dataset.load_pair(sample, image_size))")
        self.shots = list(shots)
        self.patches = [_defect_patch(img, mask, f"shot {i}") for i, (img, mask) in enumerate(shots)]
        weights = np.array([cfg.p_normal, cfg.p_real, cfg.p_extended, cfg.p_simulated, cfg.p_cutpaste,
                            cfg.p_shading, cfg.p_hairline], np.float64)
        if not self.shots:
            weights[1:3] = 0  # real and extended need shots; the others take their share
        if weights.sum() <= 0:
            raise ConfigError("synth: no real defect shots, and p_normal, p_simulated, p_cutpaste, p_shading and p_hairline are all 0; "
                              "give few-shot defects or raise one of those ratios")
        self.probs = weights / weights.sum()
        if textures is None:
            textures = load_texture_dir(cfg.texture_dir, hw) if cfg.texture_dir else builtin_textures(hw)
        self.textures = textures

    @property
    def unit(self) -> float:
        """Defect sizes are designed for 256-pixel images: they scale with the input's shorter side."""
        return min(self.hw) / 256.0

    def foreground_mask(self, image: np.ndarray) -> np.ndarray:
        if isinstance(self.foreground, np.ndarray):
            return self.foreground
        if self.foreground == "estimate":
            return estimate_foreground(image)
        return np.ones(image.shape[:2], bool)

    def sample(self, normal: np.ndarray, rng: np.random.Generator,
               region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """(uint8 HxWx3 image, float32 HxW {0,1} mask, kind). A synthetic kind that changes nothing
        visible after a few redraws comes back as the unchanged normal with kind "normal". `region` (HxW bool)
        limits generated anomalies further, e.g. to the image inside letterbox padding."""
        if normal.shape != (*self.hw, 3) or normal.dtype != np.uint8:
            raise DataError(f"normal image is {normal.shape} {normal.dtype}; expected "
                            f"{self.hw[0]}x{self.hw[1]}x3 uint8")
        kind = KINDS[rng.choice(len(KINDS), p=self.probs)]
        if kind == "real":
            img, mask = self.shots[rng.integers(len(self.shots))]
            return img.copy(), (mask > 0.5).astype(np.float32), kind
        if kind != "normal":
            fg = self.foreground_mask(normal)
            if region is not None:
                fg = fg & region
            draw = {"extended": self._extended, "simulated": self._simulated, "cutpaste": self._cutpaste,
                    "shading": self._shading, "hairline": self._hairline}[kind]
            for _ in range(TRIES):
                image, mask = draw(normal, fg, rng)
                if mask.any():
                    return image, mask, kind
        return normal.copy(), np.zeros(normal.shape[:2], np.float32), "normal"

    def _extended(self, normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A real defect, cut out, flipped/rotated/scaled and recoloured, pasted onto the foreground."""
        patch, alpha = self.patches[rng.integers(len(self.patches))]
        if rng.random() < 0.5:
            patch, alpha = patch[:, ::-1], alpha[:, ::-1]
        angle = 90.0 * rng.integers(4) + (rng.uniform(-180, 180) if rng.random() < 0.5 else 0.0)
        scale = rng.uniform(0.7, 1.3)
        scale = min(scale, 0.6 * min(self.hw) / max(alpha.shape))  # a huge shot would cover the whole image
        patch, alpha = _warp(_jitter_colour(np.ascontiguousarray(patch), rng), np.ascontiguousarray(alpha), angle, scale)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)  # soft edge, like a real boundary
        effect, full = _paste(normal, patch, alpha, point_in(fg, rng))
        return composite(normal, effect, full * fg)

    def _simulated(self, normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Perlin blobs filled with a foreign texture on the image's value scale, at a random opacity."""
        blobs = perlin_mask(normal.shape[:2], rng, self.cfg.perlin_scales, self.cfg.perlin_threshold) * fg
        texture = self._foreign_texture(normal, rng)
        opacity = rng.uniform(*self.cfg.opacity)
        return composite(normal, texture, blobs * opacity)

    def _foreign_texture(self, normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tex = self.textures[rng.integers(len(self.textures))]
        zoom = rng.uniform(1.0, 2.0)
        side = max(8, int(min(tex.shape[:2]) / zoom))
        y0, x0 = rng.integers(0, tex.shape[0] - side + 1), rng.integers(0, tex.shape[1] - side + 1)
        (h, w), big = self.hw, max(self.hw)
        crop = cv2.resize(np.ascontiguousarray(tex[y0:y0 + side, x0:x0 + side]), (big, big))
        crop = np.rot90(crop, rng.integers(4))
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        top, left = (big - h) // 2, (big - w) // 2  # the input's window of the square, turned either way
        crop = crop[top:top + h, left:left + w].astype(np.float32)
        # Same value scale as the image: a foreign pattern, not a foreign exposure (PRN's texture rule).
        std = max(float(normal.std()), 10.0) * rng.uniform(0.7, 1.3)
        mean = float(normal.mean()) + rng.uniform(-0.3, 0.3) * std
        return np.clip((crop - crop.mean()) / (crop.std() + 1e-6) * std + mean, 0, 255)

    def _cutpaste(self, normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A rectangle or a thin scar cut from the image itself, recoloured and pasted elsewhere."""
        (h, w), unit = self.hw, self.unit
        if rng.random() < 0.5:
            area = rng.uniform(0.004, 0.06) * fg.sum()
            aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
            ph, pw = np.sqrt(area * aspect), np.sqrt(area / aspect)
            angle = 0.0
        else:
            ph, pw = rng.uniform(10, 40) * unit, rng.uniform(2, 8) * unit
            angle = rng.uniform(-180, 180)
        ph, pw = int(np.clip(ph, 2, h // 2)), int(np.clip(pw, 2, w // 2))
        sx, sy = point_in(fg, rng)
        sx, sy = int(np.clip(sx - pw // 2, 0, w - pw)), int(np.clip(sy - ph // 2, 0, h - ph))
        patch = _jitter_colour(np.ascontiguousarray(normal[sy:sy + ph, sx:sx + pw]), rng)
        patch, alpha = _warp(patch, np.ones((ph, pw), np.float32), angle, 1.0)
        effect, full = _paste(normal, patch, alpha, point_in(fg, rng))
        return composite(normal, effect, full * fg)

    def _shading(self, normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The surface's own texture, brighter/darker or re-contrasted over a large region; with real shots,
        sometimes in the shape of one of their masks (flipped), so the shapes of real defects recur."""
        region = None
        if self.shots and rng.random() < 0.3:
            region = (self.shots[rng.integers(len(self.shots))][1] > 0.5).astype(np.float32)
            region = region[::-1] if rng.random() < 0.5 else region
            region = np.ascontiguousarray(region[:, ::-1] if rng.random() < 0.5 else region)
        effect, alpha = shading(normal, fg, rng, self.unit, region)
        return composite(normal, effect, alpha)

    def _hairline(self, normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        effect, alpha = hairline(normal, fg, rng, self.unit)
        return composite(normal, effect, alpha)
