"""The PRN head over a frozen encoder: residuals, multi-size self-attention, multi-scale fusion, decoder.

All shapes except the batch are fixed at construction (from the input size), and the graph uses only
Conv, MatMul, Softmax, Reshape/Transpose, Resize, pooling and TopK, so it exports cleanly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AUTO_SIZE, FUSED_DISTANCE, ModelConfig
from .backbones import STRIDES, Backbone, create_backbone
from .memory import check_memory
from .prototypes import JointMemory, ScalePrototypes, default_k
from .shapes import HEAD_SCALES, attention_sizes, head_hws


def conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def sep_conv_bn(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 (one BN + ReLU): the 3x3 context at a ninth of the multiply-adds."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def _s2d(x: torch.Tensor, p: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // p, p, w // p, p).permute(0, 3, 5, 1, 2, 4).reshape(n, p * p * c, h // p, w // p)


def _d2s(x: torch.Tensor, p: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, p, p, c // (p * p), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (p * p), h * p, w * p)


def space_to_depth(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, p*p*C, H/p, W/p), channel = (dy * p + dx) * C + c: ONNX SpaceToDepth (exported as it)."""
    return _SpaceToDepth.apply(x, p) if torch.onnx.is_in_onnx_export() else _s2d(x, p)


def depth_to_space(x: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of space_to_depth: ONNX DepthToSpace in DCR mode (exported as it)."""
    return _DepthToSpace.apply(x, p) if torch.onnx.is_in_onnx_export() else _d2s(x, p)


class _SpaceToDepth(torch.autograd.Function):
    """Export-only: one SpaceToDepth node instead of a 6-D Reshape/Transpose (3x faster in ONNX Runtime at p = 2,
    native in TensorRT)."""

    @staticmethod
    def forward(ctx, x, p):
        return _s2d(x, p)

    @staticmethod
    def symbolic(g, x, p):
        return g.op("SpaceToDepth", x, blocksize_i=p)


class _DepthToSpace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        return _d2s(x, p)

    @staticmethod
    def symbolic(g, x, p):
        return g.op("DepthToSpace", x, blocksize_i=p, mode_s="DCR")


class MultiSizeAttention(nn.Module):
    """Self-attention among non-overlapping patches, in parallel for several patch sizes.

    A token is one p x p patch of one head's channels (flattened), so attention relates regions of
    several sizes to each other; the branches are concatenated, projected and added to the input.
    Tokens are kept feature-major, (batch, head, d*p*p, patches), from a SpaceToDepth of each head's channels:
    the order of the values inside a token does not change a dot product, and this layout needs no transpose
    (the attention products read it transposed).
    """

    def __init__(self, dim: int, hw: tuple[int, int], patch_sizes: tuple[int, ...], heads: int):
        super().__init__()
        self.dim, self.hw, self.heads = dim, hw, heads
        self.sizes = attention_sizes(patch_sizes, hw)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.proj = nn.Sequential(nn.Conv2d(dim * len(self.sizes), dim, 1, bias=False), nn.BatchNorm2d(dim))

    def _tokens(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """(B, dim, h, w) -> (B, heads, d*p*p, patches)."""
        (h, w), d = self.hw, self.dim // self.heads
        t = space_to_depth(x.reshape(-1, d, h, w), p)
        return t.reshape(-1, self.heads, d * p * p, (h // p) * (w // p))

    def _untokens(self, t: torch.Tensor, p: int) -> torch.Tensor:
        (h, w), d = self.hw, self.dim // self.heads
        return depth_to_space(t.reshape(-1, d * p * p, h // p, w // p), p).reshape(-1, self.dim, h, w)

    def _scale(self, p: int) -> float:
        return float((self.dim // self.heads * p * p) ** -0.5)  # 1/sqrt(token length), a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.dim, dim=1)
        outs = []
        for p in self.sizes:
            tq, tk, tv = self._tokens(q, p), self._tokens(k, p), self._tokens(v, p)
            attn = torch.softmax(tq.transpose(-1, -2) @ tk * self._scale(p), dim=-1)  # (B, heads, queries, keys)
            outs.append(self._untokens(tv @ attn.transpose(-1, -2), p))
        return F.relu(x + self.proj(torch.cat(outs, 1)))


class MultiScaleFusion(nn.Module):
    """Each scale receives every other scale resized to it (average pooling down, bilinear up).

    The mixing is 1x1: spatial context already comes from attention and the decoder, and a 3x3 mix at
    stride 4 was the single most expensive layer of the whole model on a CPU.
    """

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.mix = nn.ModuleList(conv_bn(dim * n, dim, 1) for _ in range(n))

    @staticmethod
    def _resize(x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        if src == dst:
            return x
        if src < dst:  # finer to coarser
            return F.avg_pool2d(x, STRIDES[dst] // STRIDES[src])
        return F.interpolate(x, scale_factor=STRIDES[src] // STRIDES[dst], mode="bilinear", align_corners=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            x + mix(torch.cat([self._resize(y, HEAD_SCALES[j], HEAD_SCALES[i]) for j, y in enumerate(xs)], 1))
            for i, (x, mix) in enumerate(zip(xs, self.mix))
        ]


class Decoder(nn.Module):
    """From stride 16 to full resolution, with skips from the fused scales and the stride-2 encoder map.

    The last convolutions run at stride 2 and only the one-channel logits are upsampled to full size:
    full-resolution feature convolutions would double the training cost for no visible gain in the maps.
    """

    def __init__(self, dim: int, skip2: int, widths: tuple[int, ...], conv: str = "full"):
        super().__init__()
        w8, w4, w2, w1 = widths
        block = sep_conv_bn if conv == "separable" else conv_bn
        self.up8 = block(dim + dim, w8)
        self.up4 = block(w8 + dim, w4)
        self.up2 = block(w4 + skip2, w2)
        self.refine = block(w2, w1)
        self.out = nn.Conv2d(w1, 1, 3, padding=1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, s2: torch.Tensor, s4: torch.Tensor, s8: torch.Tensor, s16: torch.Tensor) -> torch.Tensor:
        x = self.up8(torch.cat([self._up(s16), s8], 1))
        x = self.up4(torch.cat([self._up(x), s4], 1))
        x = self.up2(torch.cat([self._up(x), s2], 1))
        return self._up(self.out(self.refine(x)))


class QuantileCalibration(nn.Module):
    """A map of values (distances, logits) to probabilities calibrated on held-out normals:
    p = sigmoid((v - loc) / temp), with p = 0.5 at the `quantile` of the normals' values and the range from their
    median to it spread over 4 logits, so ordinary normal texture sits near p = 0.02."""

    MIN_TEMP = 1e-6

    def __init__(self):
        super().__init__()
        self.register_buffer("loc", torch.zeros(()))
        self.register_buffer("temp", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def calibrated_logit(self, v: torch.Tensor) -> torch.Tensor:
        return (v - self.loc) / self.temp

    def probability(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.calibrated_logit(v))

    @torch.no_grad()
    def calibrate(self, values: torch.Tensor, quantile: float = 0.999) -> dict:
        flat = values.flatten().float()
        if flat.numel() > 4_000_000:
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:4_000_000]]
        hi, mid = torch.quantile(flat, quantile), torch.quantile(flat, 0.5)
        self.loc.fill_(float(hi))
        self.temp.fill_(max(float(hi - mid) / 4.0, self.MIN_TEMP))
        self.fitted.fill_(True)
        return {"loc": float(self.loc), "temp": float(self.temp), "quantile": quantile,
                "normal_pixels": int(values.numel())}


class DecoderCalibration(QuantileCalibration):
    """The decoder's logits as a probability on the same footing as the distance map's: calibrated on the held-out
    normals at every validation step (the decoder moves while it trains), so that fusing the two weighs them
    alike. An uncalibrated decoder puts its p = 0.5 wherever training happened to put logit 0: on Magnetic Tile
    Defect that let its normal texture outvote the distance (docs/real-data.md)."""

    MIN_TEMP = 0.05  # logits: a decoder nearly constant on normals must not turn tiny differences into certainty


class DistanceMap(QuantileCalibration):
    """The training-free part of the map: a nearest-neighbour distance of the encoder's features to normal ones,
    upsampled to the input and mapped to a probability calibrated on held-out normals (QuantileCalibration).

    The decoder learns what the anomalies it was shown look like; on appearances it never saw (real defects
    unlike the generated ones) it can stay silent while the distance does not. Its parts (model.distance_features):
    each distance scale's distance to its own memory (or its prototypes) averaged over `scales` ("per_scale"), the
    distance to one memory of those scales' features joined (JointMemory, "joint"), or both, each calibrated on
    its own (the joint part by `joint_cal`) and their calibrated logits averaged.
    """

    def __init__(self, scales: tuple[int, ...], memory: JointMemory | None = None, per_scale: bool = True,
                 border: int = 0, hw: tuple[int, int] | None = None):
        super().__init__()
        self.scales = tuple(sorted(scales))
        self.memory = memory
        self.per_scale = per_scale or memory is None
        self.joint_cal = QuantileCalibration() if memory is not None and self.per_scale else None
        # model.border_correction: the logit's excess near the input's border on held-out normals, removed (a map
        # of constants, `border`), and the logit re-calibrated (`border_gain`); zeros and 1 until calibrated
        self.border_px = border
        if border:
            if hw is None or border > min(hw) // 4:
                raise ValueError(f"border correction of {border} px needs an input of at least {4 * border} px")
            self.register_buffer("border", torch.zeros(1, 1, *hw))
            self.register_buffer("border_gain", torch.ones(()))

    def inputs(self, feats: list[torch.Tensor], distances: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the module (and `parts`) reads, from the head scales' features and per-scale distances: the
        per-scale distance maps, then the distance scales' features when there is a joint memory."""
        out = list(distances) if self.per_scale else []
        if self.memory is not None:
            out += [feats[i] for i in self.scales]
        return out

    def parts(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The raw distance maps (N, 1, H, W) from `inputs` (DistanceMap.inputs), per scale first: the head scales'
        distance maps (N, 1, h, w) (ScalePrototypes.forward, ~1 on normals at every scale) averaged over `scales`,
        and the joint memory's distance."""
        # A fixed scale factor (the scale's stride), not a target size: the exported Resize then needs no Shape
        # arithmetic and every dimension stays static.
        out = []
        if self.per_scale:
            # Each position's distance is averaged with its 3x3 neighbours first (PatchCore's locally aware
            # patches): one odd feature vector is noise, a neighbourhood of them is a defect.
            maps = [F.interpolate(F.avg_pool2d(inputs[i], 3, 1, 1, count_include_pad=False),
                                  scale_factor=STRIDES[HEAD_SCALES[i]], mode="bilinear", align_corners=False)
                    for i in self.scales]
            out.append(sum(maps) / len(maps))
        if self.memory is not None:  # its vectors are already 3x3-averaged (JointMemory.features)
            feats = inputs[len(HEAD_SCALES):] if self.per_scale else inputs
            out.append(F.interpolate(self.memory(feats), scale_factor=STRIDES[HEAD_SCALES[self.scales[0]]],
                                     mode="bilinear", align_corners=False))
        return out

    def _parts_logit(self, parts: list[torch.Tensor]) -> torch.Tensor:
        z = self.calibrated_logit(parts[0])
        if self.joint_cal is not None:
            z = 0.5 * (z + self.joint_cal.calibrated_logit(parts[1]))
        return z

    def logit(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The calibrated logit: of the one part, or the mean of the two parts' own calibrated logits; with a
        border correction, less the normals' excess near the border and re-calibrated (fit_border)."""
        z = self._parts_logit(self.parts(inputs))
        return z * self.border_gain - self.border if self.border_px else z

    def forward(self, inputs: list[torch.Tensor], as_logit: bool = False, both: bool = False):
        """The calibrated probability, or with `as_logit` its logit, or with `both` (logit, probability). Called
        as the module (not a method) so the exported nodes carry its name scope, which calibration keeps in float."""
        z = self.logit(inputs)
        if both:
            return z, torch.sigmoid(z)
        return z if as_logit else torch.sigmoid(z)

    @torch.no_grad()
    def calibrate_parts(self, parts: list[torch.Tensor], quantile: float = 0.999) -> dict:
        """Calibrate each part on its values over the held-out normals (`parts` as DistanceMap.parts returns them,
        concatenated over the images): the first part's result, with the joint part's under "joint"."""
        result = self.calibrate(parts[0], quantile)
        if self.joint_cal is not None:
            result["joint"] = self.joint_cal.calibrate(parts[1], quantile)
        if self.border_px:
            result["border"] = self.fit_border(self._parts_logit(parts), quantile)
        return result

    @torch.no_grad()
    def fit_border(self, z: torch.Tensor, quantile: float = 0.999) -> dict:
        """The border correction from the held-out normals' calibrated logits `z` (N, 1, H, W): their mean at
        each distance from the input's border (0 = the outermost pixels) less their mean farther in than
        `border_px`, where positive (a border the normals make louder is quietened; one they make quieter, a
        background or a wall around the part, is left as it is), subtracted, and the corrected logits calibrated
        again as the parts were (QuantileCalibration): `border` = (correction + loc) / temp, `border_gain` =
        1 / temp. Why: the encoder's zero padding and the fewer border features in the memory make normal texture
        at the border read as far from normal (docs/real-data.md, session 18)."""
        h, w = z.shape[-2:]
        depth = border_depth(h, w).to(z.device)
        mean = z.float().mean(0)[0]
        inner = mean[depth >= self.border_px].mean()
        profile = torch.stack([(mean[depth == i].mean() - inner).clamp(min=0) for i in range(self.border_px)])
        correction = torch.where(depth < self.border_px, profile[depth.clamp(max=self.border_px - 1)],
                                 torch.zeros(()))
        again = QuantileCalibration()
        cal = again.calibrate(z - correction, quantile)
        self.border.copy_(((correction + again.loc) / again.temp)[None, None])
        self.border_gain.fill_(1.0 / float(again.temp))
        return {"px": self.border_px, "profile": [round(float(v), 3) for v in profile],
                "loc": cal["loc"], "temp": cal["temp"]}


def border_depth(h: int, w: int) -> torch.Tensor:
    """(h, w): each pixel's distance in pixels to the nearest edge of the input (0 on the outermost ring)."""
    y = torch.arange(h)[:, None]
    x = torch.arange(w)[None, :]
    return torch.minimum(torch.minimum(y, h - 1 - y), torch.minimum(x, w - 1 - x))


class PRN(nn.Module):
    """`forward(x)` -> the decoder's anomaly logits (N, 1, H, W), what training fits;
    `predict(x)` -> (probability map, image score), with the calibrated prototype distance fused in
    (model.distance_fusion).

    x is RGB in [0, 1], (N, 3, H, W), at the configured size (model.image_size, as `cfg.hw`).
    """

    def __init__(self, cfg: ModelConfig, backbone: Backbone, num_prototypes: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = backbone
        hws = head_hws(cfg.hw)
        chans = [backbone.channels[s] for s in HEAD_SCALES]
        self.prototypes = nn.ModuleList(
            ScalePrototypes(cfg.prototype_mode, num_prototypes, c, hw, cfg.prototype_softness,
                            cfg.memory_size if i in cfg.distance_scales and cfg.scale_memory else 0)
            for i, (c, hw) in enumerate(zip(chans, hws))
        )
        self.inputs = nn.ModuleList(conv_bn(2 * c, cfg.dim, 1) for c in chans)
        self.msa = nn.ModuleList(
            MultiSizeAttention(cfg.dim, hw, cfg.patch_sizes, cfg.heads) if i in cfg.msa_scales else nn.Identity()
            for i, hw in enumerate(hws)
        )
        self.fusion = MultiScaleFusion(cfg.dim, len(HEAD_SCALES))
        self.decoder = Decoder(cfg.dim, backbone.channels[0], cfg.decoder_dims, cfg.decoder_conv)
        scales = sorted(cfg.distance_scales)
        memory = JointMemory(tuple(chans[i] for i in scales),
                             tuple(STRIDES[HEAD_SCALES[i]] // STRIDES[HEAD_SCALES[scales[0]]] for i in scales),
                             cfg.memory_size, hws[scales[0]]) if cfg.joint_memory else None
        self.distance = DistanceMap(cfg.distance_scales, memory, cfg.scale_memory, cfg.border_px, cfg.hw)
        self.decoder_cal = DecoderCalibration()

    def train(self, mode: bool = True) -> "PRN":
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm statistics of the encoder never move
        return self

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return self.encoder(x)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(decoder logits, what the distance map reads: DistanceMap.inputs)."""
        feats = self.encode(x)
        xs, distances = [], []
        for i, s in enumerate(HEAD_SCALES):
            f = feats[s]
            residual, dist = self.prototypes[i](f)
            distances.append(dist)
            xs.append(self.msa[i](self.inputs[i](torch.cat([f, residual], 1))))
        s4, s8, s16 = self.fusion(xs)
        return self.decoder(feats[0], s4, s8, s16), self.distance.inputs([feats[s] for s in HEAD_SCALES], distances)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def score(self, prob: torch.Tensor) -> torch.Tensor:
        """Image score: mean of the top-k probabilities of the map."""
        return prob.flatten(1).topk(self.cfg.score_k, dim=1).values.mean(1)

    @property
    def fuses_distance(self) -> bool:
        return self.cfg.distance_fusion in FUSED_DISTANCE and bool(self.distance.fitted)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(map, image score) by model.distance_fusion:
        "logit": the map is the sigmoid of the weighted mean of the decoder's and the distance's calibrated logits
        (model.decoder_weight, the decoder's weight: 0.5 by default), the score pools it (a geometric-mean-like
        AND: where one part is confident and the other sure of normal, the pixel stays in between; on KolektorSDD
        zero-shot this kept the decoder's noise on normal texture out better than the mean of probabilities,
        docs/real-data.md); with model.map_decoder "gated" the map output gates the decoder by the distance's
        probability, the score does not; with model.map_contrast the map's logit is pushed away from its image's
        mean (the map says where, the score whether);
        "mean": the map is the mean of the decoder's and the distance's probabilities, the score pools it;
        "max": the map is their maximum, the score pools the decoder's map alone;
        "none" (or a distance not calibrated yet): the decoder's map and its score, as in the paper.
        When fused, the decoder's probability is its calibrated one (DecoderCalibration, calibrate_decoder).
        On real photos the decoder is sharpest where the generated anomalies resemble the defects and the
        distance where they do not (thin cracks zero-shot on KolektorSDD); docs/real-data.md has the numbers."""
        logits, distances = self._run(x)
        if not self.fuses_distance:
            prob = torch.sigmoid(logits)
            return prob, self.score(prob)
        # Fused, the decoder is calibrated on held-out normals like the distance (checkpoints from before the
        # decoder calibration keep its plain logits).
        logits = self.decoder_cal.calibrated_logit(logits) if bool(self.decoder_cal.fitted) else logits
        if self.cfg.distance_fusion == "logit":
            # w * decoder + (1 - w) * distance, written so every node of it reads the decoder's output: a graph
            # re-sorted later keeps them all after the last Conv (artefact.keep_float's tail)
            # With model.map_decoder "gated" the distance's probability comes out of its module too (its scope
            # stays float).
            z, p = (self.distance(distances, both=True) if self.cfg.map_gated
                    else (self.distance(distances, as_logit=True), None))
            step = logits - z
            fused = z + self.cfg.decoder_weight * step
            prob = torch.sigmoid(fused)
            if p is None and not self.cfg.contrast:
                return prob, self.score(prob)
            # gated: the decoder's weight at a pixel is decoder_weight times the distance's probability there (it
            # shapes what the distance finds, cannot raise what it calls normal); the score keeps the plain fusion
            m = fused if p is None else z + self.cfg.decoder_weight * (p * step)
            if self.cfg.contrast:  # away from the image's mean logit; the score keeps the plain fusion
                m = m + self.cfg.contrast * (m - m.mean(dim=(2, 3), keepdim=True))
            return torch.sigmoid(m), self.score(prob)
        prob, dist = torch.sigmoid(logits), self.distance(distances)
        if self.cfg.distance_fusion == "mean":
            prob = 0.5 * (prob + dist)
            return prob, self.score(prob)
        return torch.maximum(prob, dist), self.score(prob)

    @torch.no_grad()
    def calibrate_distance(self, images: list[torch.Tensor]) -> dict:
        """Calibrate the distance map on held-out normal images (RGB in [0, 1], batches)."""
        d = []
        for x in images:
            encoded = self.encode(x)
            feats = [encoded[s] for s in HEAD_SCALES]
            distances = [p(f)[1] for p, f in zip(self.prototypes, feats)] if self.distance.per_scale else []
            d.append(self.distance.parts(self.distance.inputs(feats, distances)))
        return self.distance.calibrate_parts([torch.cat(part) for part in zip(*d)])

    @torch.no_grad()
    def calibrate_decoder(self, images: list[torch.Tensor]) -> dict:
        """Calibrate the decoder's logits on held-out normal images (RGB in [0, 1], batches); training calls it
        before every validation, since the decoder moves."""
        was_training = self.training
        self.eval()
        logits = torch.cat([self(x) for x in images])
        self.train(was_training)
        return self.decoder_cal.calibrate(logits)

    @torch.no_grad()
    def fit_prototypes(self, images: torch.Tensor | list[torch.Tensor], seed: int = 0, batch: int = 16) -> None:
        """Fit every scale's prototypes on normal images (RGB in [0, 1])."""
        chunks = images if isinstance(images, list) else list(images.split(batch))
        per_scale: list[list[torch.Tensor]] = [[] for _ in HEAD_SCALES]
        for x in chunks:
            feats = self.encode(x)
            for i, s in enumerate(HEAD_SCALES):
                per_scale[i].append(feats[s])
        for i, protos in enumerate(self.prototypes):
            protos.fit(torch.cat(per_scale[i]), seed=seed + i)
        if self.distance.memory is not None:
            self.distance.memory.fit([torch.cat(per_scale[i]) for i in self.distance.scales], seed=seed + 1000)


def build_prn(cfg: ModelConfig, num_images: int = 0, weights: str | None = None,
              num_prototypes: int | None = None) -> tuple[PRN, dict]:
    """A PRN with an unfitted head; K comes from cfg, else from the number of normal images. An image_size "auto"
    not chosen by a training yet builds at the square model.auto_side (ModelConfig.sized)."""
    cfg = cfg.sized()
    backbone, info = create_backbone(cfg.backbone, cfg.pretrained, weights)
    k = num_prototypes or cfg.num_prototypes or default_k(num_images, cfg.prototype_mode)
    return PRN(cfg, backbone, k), info


def count_gflops(model: PRN, batch: int = 1) -> float:
    """GFLOPs (2 x multiply-adds of convolutions and matrix products) per image of `model.predict`."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = model.cfg.hw
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(torch.rand(batch, 3, h, w))
    return counter.get_total_flops() / 1e9 / batch


def describe(model: PRN) -> dict:
    """What an exported artefact records about the model it came from."""
    return {**describe_config(model.cfg, int(model.prototypes[0].protos.shape[0])),
            "gflops_per_image": round(count_gflops(model), 4)}


def describe_config(c: ModelConfig, num_prototypes: int) -> dict:
    """What describe() records that the config tells without a model (all but the FLOP count)."""
    return {"image_size": c.image_size, "backbone": c.backbone, "prototype_mode": c.prototype_mode,
            "num_prototypes": num_prototypes, "topk": c.topk if c.image_size == AUTO_SIZE else c.score_k, "dim": c.dim,
            "distance_fusion": c.distance_fusion, "distance_scales": list(c.distance_scales),
            "distance_memory": c.memory_size, "distance_features": c.distance_features,
            "border_correction": c.border_correction,
            **({"decoder_weight": c.decoder_weight, "map_decoder": c.map_decoder, "map_contrast": c.map_contrast}
               if c.distance_fusion == "logit" else {})}


def model_info(cfg: ModelConfig, batch: int = 1) -> dict:
    """Parameters and GFLOPs (2 x multiply-adds) at the configured input size (for "auto", the square auto_side
    near-square images get), without weights."""
    cfg = ModelConfig(**{**cfg.sized().__dict__, "pretrained": False})
    check_memory(cfg, batch, num_images=100, training=False)
    model, _ = build_prn(cfg, num_images=100)
    model.eval()
    model.distance.fitted.fill_(True)  # count the map as a trained model computes it (the distance fused in)
    gflops = count_gflops(model, batch)
    enc = sum(p.numel() for p in model.encoder.parameters())
    head = sum(p.numel() for p in model.head_parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if "protos" in n)
    # the distance memories' centres (per scale and joint), what an artefact carries beside the weights
    memory = sum(b.numel() for n, b in model.named_buffers() if n.endswith("memory_t"))
    return {
        "backbone": cfg.backbone, "image_size": cfg.image_size, "batch": batch,
        "params_encoder": enc, "params_head": head, "prototype_values": buffers, "distance_memory_values": memory,
        "gflops": gflops,
        "num_prototypes": model.prototypes[0].protos.shape[0], "prototype_mode": cfg.prototype_mode,
    }
