"""Typed configuration, validated once at the edge (CLI, YAML file, checkpoint) and passed down.

Named PRN variants are presets of one `ModelConfig`, not separate classes.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, TypeVar, Union

import yaml

from .input_policy import AUTO_SIZE, INPUT_POLICIES, as_hw, auto_image_size
from .errors import ConfigError

# The backbones prn_edge.model.backbones builds: named here so validating a config needs no model code.
BACKBONE_NAMES = ("efficientnet_lite0", "resnet18", "wide_resnet50_2", "tiny")

T = TypeVar("T")

# Beyond these the model does not fit the machines we deploy on (frames larger than the model input are tiled or
# resized by the line); within them, prn_edge.model.memory checks the memory a run needs before it starts.
# 1024 prototypes are four times the automatic maximum; the k-means fit of 2048 already took over 20 GB.
MAX_IMAGE_SIZE = 2048
MAX_PROTOTYPES = 1024
MAX_DISTANCE_MEMORY = 4096
MAX_WIDTH = 1024  # model.dim and model.decoder_dims
TOPK_FRACTION = 0.01  # model.topk 0: the image score pools this fraction of the map's pixels
TOPK_LIMIT = 3839  # TensorRT's TopK layer takes K < 3840 (export.lint checks the exported graph too)
MAX_SEED = 2**32 - 1
AUTO_MAP = "auto"  # model.map_decoder and model.map_contrast chosen when training starts
MAP_DECODERS = (AUTO_MAP, "weighted", "gated")
MAX_MAP_CONTRAST = 2.0  # the map's float rounding grows with it: 4 broke ONNX Runtime parity (1e-4) on a tiny model
ZERO_SHOT_CONTRAST = 0.5  # model.map_contrast "auto" without real defect shots
MAX_BORDER_CORRECTION = 128  # px: model.border_correction


FUSED_DISTANCE = ("logit", "mean", "max")  # the model.distance_fusion values that put the distance map in
DISTANCE_FUSIONS = FUSED_DISTANCE + ("none",)


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True  # False means random weights; only when asked for explicitly
    # The model input: one side S (a square, S x S) or [H, W] (e.g. [256, 640] for long strips), each a multiple of
    # 32. Kept as written (a square as one int, as checkpoints have always had it); read it as `hw`.
    # "auto" (the default): chosen when training starts from the training images' median aspect ratio
    # (input_policy.auto_image_size: square auto_side for near-square images and for tiles, else short side
    # auto_side and the long side following the images); the checkpoint records the size it chose. KolektorSDD
    # zero-shot at the 640x256 it chooses: 85.1 / 92.4 / 82.4 against 73.4 / 77.4 / 52.4 squeezed into 256x256
    # (docs/real-data.md).
    image_size: Union[int, Tuple[int, int], str] = "auto"
    auto_side: int = 256  # the short side of an "auto" image_size
    # How images of any size and aspect become the model input (prn_edge.input_policy): "stretch",
    # "letterbox" (keep the aspect ratio, pad with black) or "tiles" (image_size is a tile cut at the image's own
    # resolution; images are split into overlapping tiles, prn_edge.tiling). Recorded in checkpoints and artefacts.
    input_policy: str = "stretch"
    # Prototypes: "image" = whole feature maps as in the paper (aligned objects),
    # "patch" = per-position nearest of K feature vectors (textures, unaligned parts).
    prototype_mode: str = "patch"
    num_prototypes: int = 0  # 0 = automatic (see prototypes.default_k)
    # Near ties between prototypes: those within about this fraction of the nearest distance are blended
    # (softmin), so the residual is continuous and PyTorch, ONNX Runtime and TensorRT agree; 0 = hard argmin.
    prototype_softness: float = 0.001
    dim: int = 48  # width of the head after the input projection
    msa_scales: Tuple[int, ...] = (1, 2)  # indices into the backbone scales that get multi-size attention
    patch_sizes: Tuple[int, ...] = (2, 4, 8)  # MSA patch sizes, in cells of the feature map
    heads: int = 2
    decoder_dims: Tuple[int, ...] = (48, 32, 16, 16)
    # "separable": depthwise 3x3 + pointwise 1x1 decoder convolutions (~5x fewer FLOPs at strides 2-8, where the
    # full 3x3 convolutions were the most expensive layers of the model on a CPU); "full": plain 3x3.
    decoder_conv: str = "full"
    # Image score = the mean of the top-k probabilities of the map (of each tile's, with input_policy tiles);
    # 0 = k from the map's size, TOPK_FRACTION of its pixels (1%: 655 at 256x256, 1638 at 256x640), chosen when
    # training starts and recorded in the checkpoint like an image_size "auto". At most TOPK_LIMIT: TensorRT's TopK
    # takes K < 3840, and export checks every graph for TensorRT. A fixed k = 100 pooled 0.15% of a 256x256 map and
    # 0.06% of a 256x640 one: on the real-data benchmark's checkpoints 1% raised the unseen types' image AUROC by
    # 0.6 to 3.2 points on all three datasets and cost the seen types of Magnetic Tile Defect 1.3 and 3.4 (their
    # learned peaks are diluted); docs/real-data.md.
    topk: int = 0
    # The training-free part of the map (model.prn.DistanceMap): distance to the nearest prototype at these
    # head scales (0 = stride 4, 1 = 8, 2 = 16), calibrated on held-out normals and fused with the decoder's map
    # (calibrated the same way): "logit" (map and image score from the mean of the two calibrated logits: a pixel
    # is as anomalous as both say together), "mean" (the mean of the two probabilities: either alone can lift a
    # pixel halfway), "max" (map = their maximum, score from the decoder alone) or "none" (the decoder alone, as in
    # the paper). With held-out real defects, training keeps whichever of this one and "max" finds them best
    # (train.trainer.choose_fusion). "logit" against "mean" in fresh runs of the defaults (docs/real-data.md):
    # MTD unseen 88.4 / 92.6 / 79.6 against 88.9 / 92.1 / 77.1, KolektorSDD zero-shot 73.4 / 77.4 / 52.4 against
    # 72.8 / 76.3 / 50.1.
    distance_fusion: str = "logit"
    # How much the decoder's calibrated logit counts in the "logit" fusion, the distance's the rest: w * decoder +
    # (1 - w) * distance, from 0 (the distance map alone) to 1 (the decoder alone). Zero-shot on thin cracks
    # (KolektorSDD) 0.25 localized better and found fewer images; on Magnetic Tile Defect it lost 5.8 image AUROC
    # points; generated anomalies of kinds training never drew favoured the decoder on both (docs/real-data.md).
    decoder_weight: float = 0.5
    # How the decoder enters the map the model outputs (localization: pixel metrics, the pixel threshold, overlays,
    # the line's heat maps) with the "logit" fusion; the image score keeps the plain fusion. "weighted": the map is
    # the score's (decoder_weight at every pixel). "gated": the decoder's weight at a pixel is decoder_weight times
    # the distance's probability there, so the decoder shapes what the distance finds and cannot raise what the
    # distance calls normal. Zero-shot on small pits (BSData) gated localized better (AUPRO +1.4 per scale, +2.3 and
    # +5.8 joint, pixel AUROC and AP kept); on Magnetic Tile Defect, whose large "uneven" regions the distance sees
    # only at their edges, it lost 4.6 AUPRO zero-shot and 5.0 with 10 shots. "auto" (the default) is chosen when
    # training starts and recorded in the checkpoint: "gated" without real defect shots, "weighted" with them (see
    # map_contrast for why; docs/real-data.md, sessions 11 and 12).
    map_decoder: str = AUTO_MAP
    # How far the output map (localization, with the "logit" fusion) pushes each pixel's logit away from its
    # image's mean logit: m + map_contrast * (m - mean(m)); 0 = the map as fused. The map then says where in the
    # image, the image score (not changed) whether: a part whose whole surface the model finds a little off (dirt,
    # reflections, a tile of another finish) no longer lifts every pixel of its map above the defects of cleaner
    # parts. With input policy tiles each tile's mean (the order of pixels changes across tiles), with letterbox the
    # mean of the model input, padding included. At 1, zero-shot, it lifted AUPRO and pixel AP on small
    # defects (BSData pits +2.7 / +4.5, KolektorSDD cracks +0.6 / +5.6) and cost defects covering much of the part
    # (MTD unseen pixel AUROC -1.0 zero-shot, -2.4 with 10 shots, "uneven" bands). "auto" (the default) is chosen
    # when training starts, as map_decoder "auto": without real defect shots the map is gated and contrasted at
    # ZERO_SHOT_CONTRAST, 0.5 since session 15: over four zero-shot real runs with 4096-centre memories, at 1 the
    # map fell 0.5 points below the kNN reference's localization (pixel AUROC on MTD "uneven" tiles and BSData seed
    # 1), at 0.5 by 0.04 (BSData seed 1 pixel AUROC 98.96 against 98.996; MTD zero-shot 88.2 -> 88.9 against 88.6;
    # BSData seed 1 AUPRO 88.1 -> 87.2 against 86.8): the bar is never below it. With real shots the plain map
    # (0, "weighted"): the decoder then finds what the distance misses (docs/real-data.md, sessions 12 and 15).
    map_contrast: Union[float, str] = AUTO_MAP
    distance_scales: Tuple[int, ...] = (1, 2)
    # Centres the distance map measures against at each distance scale (patch prototypes): k-means of the normals'
    # patch features, kept apart from the prototypes the decoder reads, so the map is a nearest-neighbour distance
    # close to a kNN memory's while the head keeps its small vocabulary (docs/real-data.md). 0 = the prototypes.
    # 4096 since session 14: four times the 1024 before brought the zero-shot map to the kNN reference's
    # localization on BSData (seed 1 pixel AP 16.7 -> 19.4, the reference 19.0) for 1.99 -> 3.38 GFLOPs at 256 px
    # with both memories (docs/real-data.md, session 14); 1024 is the cheaper setting, and the one for fewer than
    # about 64 training normals at 256 px, whose memory repeats centres (at most a quarter of the vectors each).
    distance_memory: int = 4096
    # What the distance memory holds: "per_scale", a memory per distance scale and the mean of their distances;
    # "joint", one memory of the distance scales' features joined at the finest of them (coarser ones upsampled,
    # each position averaged with its 3x3 neighbours), so a position is normal only where one normal place matched
    # it at every scale at once, as the kNN reference of the real-data benchmark measures; "both" (the default),
    # the two, each calibrated on the held-out normals and their logits averaged. Joined, the distance localizes
    # regions better (zero-shot AUPRO +1 to +3.3 on BSData and KolektorSDD) and small pits worse (BSData zero-shot
    # pixel AP -3.7 and -7.9 in the map); both kept most of each: over four zero-shot real runs the points below
    # the kNN reference's localization fell from 4.3 (per_scale) to 3.1, and MTD 10-shot stayed level
    # (docs/real-data.md, session 13). It costs a second memory search (at 256 px 1.68 -> 1.99 GFLOPs with 1024
    # centres, 2.10 -> 3.38 with 4096). Without a distance memory (model.distance_memory 0, image prototypes)
    # "both" is the per-scale distance to the prototypes.
    distance_features: str = "both"
    # Pixels from the input's border within which the distance map's logit is corrected by the held-out normals'
    # excess there (model.prn.DistanceMap.fit_border; 0 = none): near the border the encoder sees zero padding
    # and the memory holds fewer such features, so normal texture there reads as farther from normal than inside,
    # and the image score and the pixel threshold are set by it. Only an excess is removed: a border the normals
    # make quieter (a background, a wall around the part) stays as it is. At most a quarter of the input's short
    # side (border_px).
    border_correction: int = 32

    @property
    def border_px(self) -> int:
        """The border correction's width at this input size: border_correction, at most a quarter of the short
        side (so the normals' mean farther in, what the border is measured against, covers the middle half)."""
        return min(self.border_correction, min(self.hw) // 4)

    @property
    def map_gated(self) -> bool:
        """Whether the output map gates the decoder by the distance (map_decoder "gated", "logit" fusion); "auto"
        not chosen by a training yet (a model built without training) is "weighted"."""
        return self.map_decoder == "gated" and self.distance_fusion == "logit"

    @property
    def contrast(self) -> float:
        """The map's contrast around each image's mean (map_contrast, "logit" fusion; "auto" not chosen yet: 0)."""
        if self.map_contrast == AUTO_MAP or self.distance_fusion != "logit":
            return 0.0
        return float(self.map_contrast)

    def resolve_map(self, real_shots: int) -> Optional[str]:
        """Replace map_decoder and map_contrast "auto" by their choice for a training with `real_shots` real defect
        shots; returns a note saying what was chosen (None when both were given)."""
        if AUTO_MAP not in (self.map_decoder, self.map_contrast):
            return None
        logit = self.distance_fusion == "logit"
        if self.map_decoder == AUTO_MAP:
            self.map_decoder = "gated" if logit and not real_shots else "weighted"
        if self.map_contrast == AUTO_MAP:
            self.map_contrast = ZERO_SHOT_CONTRAST if logit and not real_shots else 0.0
        why = ("the logit fusion only" if not logit else
               f"{real_shots} real defect shots: the map is the score's" if real_shots else
               "no real defect shots: the decoder shapes in the map only what the training-free distance finds, "
               "and each image's map is contrasted around its mean")
        return (f"model.map_decoder auto -> {self.map_decoder}, model.map_contrast auto -> {self.map_contrast:g} "
                f"({why})")

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        if self.image_size == AUTO_SIZE:
            raise ConfigError("model.image_size is 'auto': it is chosen from the training images when training "
                              "starts (a checkpoint records the size); give a size here, e.g. 256 or [640, 256]")
        return as_hw(self.image_size)

    def sized(self) -> "ModelConfig":
        """This config, or with image_size "auto" a copy at the square `auto_side`: what a model built without
        training images (model_info, a library user's build_prn) gets; training chooses from its images."""
        if self.image_size != AUTO_SIZE:
            return self
        return dataclasses.replace(self, image_size=self.auto_side)

    def resolve_image_size(self, aspect: float) -> Optional[str]:
        """Replace image_size "auto" by the size for training images of median height / width `aspect`; returns
        a note saying what was chosen (None when the size was given)."""
        if self.image_size != AUTO_SIZE:
            return None
        size = _image_size(auto_image_size(aspect, self.input_policy, self.auto_side, MAX_IMAGE_SIZE))
        self.image_size = size
        shape = "a square" if isinstance(size, int) else "height x width"
        return (f"model.image_size auto -> {self.size_text} ({shape}; the training images' median height / width "
                f"is {aspect:.2f})")

    def resolve_topk(self) -> Optional[str]:
        """Replace topk 0 by the k it means at this (chosen) size, so a checkpoint records the k its thresholds
        were set with; returns a note saying what was chosen (None when k was given)."""
        if self.topk:
            return None
        self.topk = self.score_k
        h, w = self.hw
        return f"model.topk 0 -> {self.topk} (the image score pools {100 * TOPK_FRACTION:g}% of the {h}x{w} map)"

    @property
    def score_k(self) -> int:
        """The k of the image score's top-k mean: model.topk, or for 0 TOPK_FRACTION of the map's pixels (at least
        1, at most TOPK_LIMIT)."""
        if self.topk:
            return self.topk
        h, w = self.hw
        return int(min(max(round(TOPK_FRACTION * h * w), 1), TOPK_LIMIT))

    @property
    def memory_size(self) -> int:
        """Distance memory centres per distance scale: distance_memory, or 0 where no map reads them (fusion
        "none") or the distance is per image (image prototypes)."""
        fused = self.distance_fusion in FUSED_DISTANCE and self.prototype_mode == "patch"
        return self.distance_memory if fused else 0

    @property
    def joint_memory(self) -> bool:
        """True when the distance map measures against one memory of the joined scales (distance_features
        "joint" or "both", with a distance memory)."""
        return self.distance_features in ("joint", "both") and self.memory_size > 0

    @property
    def scale_memory(self) -> bool:
        """True when the distance map measures each distance scale against its own memory or, without one, its
        prototypes (distance_features "per_scale" or "both"; "both" without a memory is per scale)."""
        return self.distance_features != "joint" or not self.memory_size

    @property
    def size_text(self) -> str:
        """image_size as a config file writes it: 256, [256, 640] or auto."""
        return str(self.image_size) if isinstance(self.image_size, (int, str)) else str(list(self.image_size))

    def validate(self) -> "ModelConfig":
        _choice("model.backbone", self.backbone, sorted(BACKBONE_NAMES))
        _choice("model.prototype_mode", self.prototype_mode, ["image", "patch"])
        _choice("model.input_policy", self.input_policy, list(INPUT_POLICIES))
        self.image_size = _image_size(self.image_size)
        if self.auto_side % 32 or not 64 <= self.auto_side <= MAX_IMAGE_SIZE:
            raise ConfigError(f"model.auto_side={self.auto_side}: a multiple of 32 from 64 to {MAX_IMAGE_SIZE}")
        if self.input_policy == "tiles" and self.prototype_mode == "image":
            raise ConfigError("model.input_policy=tiles with model.prototype_mode=image: tiles are cut anywhere on "
                              "the image, so whole-image prototypes (aligned parts) do not apply; set "
                              "model.prototype_mode=patch, or model.input_policy stretch or letterbox")
        if not 0 <= self.prototype_softness <= 0.5:
            raise ConfigError(f"model.prototype_softness={self.prototype_softness}: 0 (hard nearest) .. 0.5")
        if not 0 <= self.num_prototypes <= MAX_PROTOTYPES:
            raise ConfigError(f"model.num_prototypes={self.num_prototypes}: 0 (chooses automatically) .. "
                              f"{MAX_PROTOTYPES}")
        if self.heads < 1:
            raise ConfigError(f"model.heads={self.heads}: must be >= 1")
        if not 0 < self.dim <= MAX_WIDTH or self.dim % self.heads:
            raise ConfigError(f"model.dim={self.dim} must be a positive multiple of model.heads={self.heads}, "
                              f"at most {MAX_WIDTH}")
        if any(s not in (0, 1, 2) for s in self.msa_scales):
            raise ConfigError(f"model.msa_scales={self.msa_scales}: scale indices are 0 (stride 4), 1 (8), 2 (16)")
        for p in self.patch_sizes:
            if p < 1 or (p & (p - 1)):
                raise ConfigError(f"model.patch_sizes: {p} is not a power of two")
        _choice("model.decoder_conv", self.decoder_conv, ["full", "separable"])
        if len(self.decoder_dims) != 4 or not all(0 < w <= MAX_WIDTH for w in self.decoder_dims):
            raise ConfigError(f"model.decoder_dims={list(self.decoder_dims)}: needs 4 widths from 1 to {MAX_WIDTH} "
                              "(stride 8, 4, 2 and the final stride-2 refinement)")
        _choice("model.distance_fusion", self.distance_fusion, list(DISTANCE_FUSIONS))
        if not 0 <= self.decoder_weight <= 1:
            raise ConfigError(f"model.decoder_weight={self.decoder_weight}: from 0 (the distance map alone) to 1 (the "
                              "decoder alone)")
        _choice("model.map_decoder", self.map_decoder, list(MAP_DECODERS))
        if self.map_decoder == "gated" and self.distance_fusion != "logit":
            raise ConfigError(f"model.map_decoder=gated gates the decoder by the distance in the \"logit\" fusion's "
                              f"map; distance_fusion is {self.distance_fusion!r}. Set model.map_decoder auto or "
                              "weighted, or distance_fusion logit")
        if isinstance(self.map_contrast, str) and self.map_contrast != AUTO_MAP:
            raise ConfigError(f"model.map_contrast={self.map_contrast!r}: a number from 0 (the map as fused) to "
                              f"{MAX_MAP_CONTRAST:g}, or \"auto\"")
        if self.map_contrast != AUTO_MAP:
            self.map_contrast = _number("model.map_contrast", self.map_contrast, float)
            if not 0 <= self.map_contrast <= MAX_MAP_CONTRAST:
                raise ConfigError(f"model.map_contrast={self.map_contrast:g}: from 0 (the map as fused) to "
                                  f"{MAX_MAP_CONTRAST:g}, or \"auto\"")
        if self.map_contrast not in (0, AUTO_MAP) and self.distance_fusion != "logit":
            raise ConfigError(f"model.map_contrast={self.map_contrast:g} acts on the \"logit\" fusion's map; "
                              f"distance_fusion is {self.distance_fusion!r}. Set model.map_contrast auto or 0, "
                              "or distance_fusion logit")
        if not self.distance_scales or any(i not in (0, 1, 2) for i in self.distance_scales):
            raise ConfigError(f"model.distance_scales={self.distance_scales}: one or more of 0 (stride 4), 1 (8), "
                              "2 (16)")
        _choice("model.distance_features", self.distance_features, ["both", "joint", "per_scale"])
        self.border_correction = _number("model.border_correction", self.border_correction, int)
        if not 0 <= self.border_correction <= MAX_BORDER_CORRECTION:
            raise ConfigError(f"model.border_correction={self.border_correction}: pixels from the border, 0 (none) "
                              f"to {MAX_BORDER_CORRECTION}")
        if self.distance_features == "joint" and not self.memory_size:
            raise ConfigError("model.distance_features=joint needs a distance memory: model.distance_memory > 0, "
                              "model.prototype_mode patch and a distance_fusion that fuses the distance (logit, mean "
                              f"or max); here distance_memory={self.distance_memory}, prototype_mode="
                              f"{self.prototype_mode}, distance_fusion={self.distance_fusion}. Set "
                              "model.distance_features per_scale or both, or change those")
        if not 0 <= self.distance_memory <= MAX_DISTANCE_MEMORY:
            raise ConfigError(f"model.distance_memory={self.distance_memory}: 0 (the distance map uses the "
                              f"prototypes) .. {MAX_DISTANCE_MEMORY} centres per distance scale")
        # (every allowed size has more pixels than TOPK_LIMIT: 64 x 64 at the least)
        if not 0 <= self.topk <= TOPK_LIMIT:
            raise ConfigError(f"model.topk={self.topk}: 0 (1% of the map) or from 1 to {TOPK_LIMIT} pixels "
                              "(TensorRT's TopK takes K < 3840; export checks every graph for TensorRT)")
        return self


def _image_size(value: Any) -> Union[int, Tuple[int, int]]:
    """model.image_size checked and normalized: an int for a square (also when given as [S, S]), else (H, W), or
    "auto"."""
    hint = "; larger frames are split into tiles or resized on the line"
    if isinstance(value, str) and value.strip().lower() == AUTO_SIZE:
        return AUTO_SIZE
    if isinstance(value, str) and not value.strip().isdigit():
        near = difflib.get_close_matches(value.lower(), [AUTO_SIZE], n=1, cutoff=0.5)
        raise ConfigError(f"model.image_size={value!r}: {'did you mean ' + repr(AUTO_SIZE) + '? ' if near else ''}"
                          "give one side (e.g. 256), [height, width] (e.g. [640, 256]) or auto")
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"model.image_size={list(value)}: give one side (a square, e.g. 256) or [height, width] "
                              "(e.g. [256, 640])")
        sides = tuple(_number(f"model.image_size[{i}]", v, int) for i, v in enumerate(value))
        for name, side in zip(("height", "width"), sides):
            if not 64 <= side <= MAX_IMAGE_SIZE or side % 32:
                raise ConfigError(f"model.image_size={list(sides)}: the {name} {side} must be a multiple of 32 from "
                                  f"64 to {MAX_IMAGE_SIZE}{hint}")
        return sides[0] if sides[0] == sides[1] else sides
    value = _number("model.image_size", value, int)
    if not 64 <= value <= MAX_IMAGE_SIZE or value % 32:
        raise ConfigError(f"model.image_size={value}: must be a multiple of 32 from 64 to {MAX_IMAGE_SIZE}{hint}")
    return value


@dataclass
class SynthConfig:
    """Mix of training samples; ratios are relative weights, normalized at use."""

    p_normal: float = 0.3
    p_real: float = 0.05  # a real defect shot as it is
    p_extended: float = 0.15  # real defect augmented and pasted onto a normal image
    p_simulated: float = 0.2  # Perlin mask filled with foreign texture
    p_cutpaste: float = 0.1  # scar/patch cut from the same image
    p_shading: float = 0.1  # a region of the surface brighter/darker or streakier, its texture kept (synth.surface)
    p_hairline: float = 0.1  # a thin, often faint crack or scratch (synth.surface)
    perlin_scales: Tuple[int, ...] = (1, 2, 3, 4, 5)  # log2 of the lowest noise frequency grid
    perlin_threshold: float = 0.5
    opacity: Tuple[float, float] = (0.15, 1.0)
    texture_dir: str = ""  # empty = built-in real photos from installed packages
    foreground_mask: str = ""  # image marking the object (aligned parts); empty = from the category's meta

    def validate(self) -> "SynthConfig":
        ratios = [self.p_normal, self.p_real, self.p_extended, self.p_simulated, self.p_cutpaste, self.p_shading,
                  self.p_hairline]
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ConfigError(f"synth ratios must be >= 0 and not all zero, got {ratios}")
        if len(self.opacity) != 2 or not 0 <= self.opacity[0] <= self.opacity[1] <= 1:
            raise ConfigError(f"synth.opacity={list(self.opacity)}: need [low, high] with 0 <= low <= high <= 1")
        if not 0 < self.perlin_threshold < 1:
            raise ConfigError("synth.perlin_threshold must be in (0, 1)")
        if not self.perlin_scales or not all(0 <= s <= 8 for s in self.perlin_scales):
            raise ConfigError(f"synth.perlin_scales={list(self.perlin_scales)}: one or more of 0 .. 8 (log2 of the "
                              "noise grid)")
        if self.texture_dir and not _is(Path.is_dir, self.texture_dir):
            raise ConfigError(f"synth.texture_dir={self.texture_dir!r} is not a folder; give a folder of images or leave it empty")
        if self.foreground_mask and not _is(Path.is_file, self.foreground_mask):
            raise ConfigError(f"synth.foreground_mask={self.foreground_mask!r} does not exist; give a mask image "
                              "(white = object) or leave it empty")
        return self


@dataclass
class TrainConfig:
    steps: int = 400
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "focal+smoothl1"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.75
    val_fraction: float = 0.2  # of train/good, held out for threshold and best step
    val_every: int = 100
    num_shots: int = 10  # real defects used for training
    # Fraction of each defect type's real shots held out for validation (types with >= 3 shots keep at least
    # one back); with held-out real defects, they choose the best step and the thresholds. 0 = train on all.
    val_shots: float = 0.3
    seed: int = 0
    threads: int = 0  # 0 = torch default

    def validate(self) -> "TrainConfig":
        _choice("train.loss", self.loss, ["focal+smoothl1", "focal+dice"])
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("train.steps and train.batch_size must be >= 1")
        if not 0 < self.val_fraction < 0.9:
            raise ConfigError("train.val_fraction must be in (0, 0.9)")
        if not 0 <= self.val_shots < 1:
            raise ConfigError(f"train.val_shots={self.val_shots}: a fraction in [0, 1) of each type's real shots")
        if self.val_every < 1:
            raise ConfigError("train.val_every must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0 and train.weight_decay={self.weight_decay} >= 0")
        if self.focal_gamma < 0 or not 0 <= self.focal_alpha <= 1:
            raise ConfigError(f"train.focal_gamma={self.focal_gamma} must be >= 0 and train.focal_alpha="
                              f"{self.focal_alpha} in [0, 1]")
        if self.num_shots < 0 or self.threads < 0:
            raise ConfigError("train.num_shots and train.threads must be >= 0")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train.seed={self.seed}: 0 .. {MAX_SEED}")
        return self


@dataclass
class Config:
    variant: str = "prn-edge"
    model: ModelConfig = field(default_factory=ModelConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self.model.validate()
        self.synth.validate()
        self.train.validate()
        if self.model.input_policy == "tiles" and self.synth.foreground_mask:
            raise ConfigError("synth.foreground_mask is a mask at the model input, which with model.input_policy="
                              "tiles is a tile anywhere on the image; leave synth.foreground_mask empty (anomalies "
                              "then go where the category's foreground rule says)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


VARIANTS: dict[str, dict] = {
    # Close to the paper: ResNet-18 (or WRN-50 by override), aligned-image prototypes, three MSA blocks.
    "prn-paper": {"model": {"backbone": "resnet18", "prototype_mode": "image", "dim": 64,
                            "msa_scales": (0, 1, 2), "decoder_dims": (64, 48, 32, 16)}},
    # The default: EfficientNet-Lite0, sized for a Jetson and a CPU.
    "prn-edge": {},
    # For tests: small input, random tiny backbone, few steps.
    "prn-tiny": {"model": {"backbone": "tiny", "pretrained": False, "image_size": 64, "dim": 16,
                           "patch_sizes": (2, 4), "decoder_dims": (16, 16, 8, 8), "topk": 10},
                 "train": {"steps": 20, "batch_size": 4, "val_every": 10}},
}


def _choice(key: str, value: Any, allowed: list) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {allowed}")


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown key {where + '.' if where else ''}{key}; allowed: {sorted(fields)}{hint}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{where}.{key}" if where else key)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}.{key}: expected a list, got {value!r}")
            elem = _element_type(fields[key], default)
            value = tuple(_number(f"{where}.{key}[{i}]", v, elem) if elem else v for i, v in enumerate(value))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
        elif "Union" in str(fields[key].type):  # model.image_size: a number, a pair or "auto"
            value = tuple(value) if isinstance(value, (list, tuple)) else value  # the section's validate() checks it
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            value = _number(f"{where}.{key}", value, type(default))
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _number(key: str, value: Any, kind: type) -> Any:
    """A finite int or float for `key`: NaN and infinity are refused everywhere (a NaN deadline decides no part)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}" + _yaml_number_hint(value))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        return kind(value)
    except OverflowError:  # an int beyond any float
        raise ConfigError(f"{key}: {value} is out of range") from None


def _yaml_number_hint(value: Any) -> str:
    """YAML 1.1 reads 1e8 as text (a float needs a dot and a signed exponent): say so instead of 'not a number'."""
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        return ""
    return "; YAML reads it as text: write the number in full or like 1.0e+8" if math.isfinite(number) else ""


def _is(test, path: str | Path) -> bool:
    """Path.is_dir / is_file that answers False for a name the system cannot even look up (too long, say)."""
    try:
        return test(Path(path))
    except OSError:
        return False


def _element_type(f: dataclasses.Field, default: tuple) -> type | None:
    """int or float for a tuple of numbers (from the default, else the annotation), None for anything else."""
    if default:
        return type(default[0]) if type(default[0]) in (int, float) else None
    ann = str(f.type)
    return int if "Tuple[int" in ann else float if "Tuple[float" in ann else None


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def make_config(variant: str = "prn-edge", overrides: Mapping | None = None) -> Config:
    """A validated config: the variant's preset, then `overrides` (nested dict, e.g. from YAML or the CLI)."""
    _choice("variant", variant, sorted(VARIANTS))
    data = _merge(VARIANTS[variant], overrides or {})
    data.pop("variant", None)
    cfg = _build(Config, data, "")
    cfg.variant = variant
    return cfg.validate()


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line for a YAML error: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or getattr(e, 'reason', None) or type(e).__name__}{where}"


def _yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply") from None


def load_config_file(path: str | Path) -> dict:
    """Read a YAML config file into a nested dict (validated when passed to `make_config`)."""
    p = Path(path)
    if not _is(Path.exists, p):
        raise ConfigError(f"config file {p} does not exist")
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; give a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not a text file; give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror}") from None
    data = _yaml(text, f"config file {p}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping")
    return data


def parse_override(text: str) -> dict:
    """`train.steps=500` -> {"train": {"steps": 500}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.steps=500")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: {key!r} is not a key; it must look like section.key=value, "
                          "e.g. train.steps=500")
    value = _yaml(raw, f"override {text!r}: the value")
    out: dict = {}
    cur = out
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out
