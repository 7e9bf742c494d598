"""Multi-scale prototypes of normal features and the residual to the nearest one.

Two modes share one distance computation:
- "image": a prototype is a whole (C, H, W) feature map, as in the PRN paper; suits aligned objects.
- "patch": a prototype is a C-vector and every position picks its own nearest; suits textures and parts
  that are not aligned.
The nearest prototype is found with matrix products only, |P|^2 - 2 f.P^T (|f|^2 is the same for every
candidate, so it cannot change the argmin): no cdist, no sequence ops and no (batch x K x C x H x W)
expansion, so the graph exports to ONNX and TensorRT unchanged.

A hard argmin is discontinuous: where two prototypes are nearly equidistant, the last-bit differences between
PyTorch, ONNX Runtime and TensorRT pick different ones, and the map differs by up to ~1e-3. With softness s > 0
the "nearest" prototype is a softmin blend, weights exp(-(d - d_min) / (s * d_min)): prototypes further than a
few s * d_min from the nearest get weight ~0 (so it equals the argmin almost everywhere), and near ties blend
smoothly, which makes the residual a continuous function of the features. Cost: a Softmax and a MatMul
instead of ArgMin and Gather.

A scale may also keep a distance memory (patch mode): more k-means centres of the same normal vectors, used only
for the distance map. The residual the head reads keeps the small vocabulary it was trained with, while the
distance becomes a finer nearest-neighbour distance, closer to a kNN memory's. It is a minimum over MatMul
results (no argmin), so backends agree on it to rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_KMEANS_VECTORS = 40_000
PATCHES_PER_PROTOTYPE = 4
SEED_ROUNDS = 256  # k-means++ draws one seed per round up to this many centres (prototypes), more beyond


def default_k(num_images: int, mode: str) -> int:
    """About 10% of the normal images for image prototypes; a fixed-size vocabulary for patch prototypes.
    More patch prototypes bring the distance map closer to a kNN memory (KolektorSDD zero-shot, distance image
    AUROC 69.6 with 81, 76.3 with 1024) but cost k-means time and, on Magnetic Tile Defect, pixel AUROC
    (docs/real-data.md): set model.num_prototypes for thin defects on a large surface."""
    if mode == "image":
        return int(min(max(round(0.1 * num_images), 2), 64))
    return int(min(max(num_images, 64), 256))


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """Plain k-means with k-means++ seeding; x is (N, D) float32, returns (k, D). Deterministic by seed.
    Seeds are drawn in at most SEED_ROUNDS rounds: one per round (k-means++ itself) up to that many centres,
    several per round beyond (each drawn without replacement in proportion to the squared distance to the centres
    so far). Seeding one at a time was most of the fit's time for a 1024-centre distance memory (sequential
    steps; 98 s against 37 s drawn in 32 rounds on 40,000 vectors, the same inertia after Lloyd's iterations)."""
    n = x.shape[0]
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    centers = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centers[0]) ** 2).sum(1)
    per_round = math.ceil((k - 1) / SEED_ROUNDS)
    x2 = None  # |x|^2, once, when a matrix of distances is first needed
    while len(centers) < k:
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        if per_round <= 1:
            c = x[torch.multinomial(probs, 1, generator=g)].squeeze(0)
            centers.append(c)
            d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
            continue
        new = x[torch.multinomial(probs, min(per_round, k - len(centers)), replacement=False, generator=g)]
        centers.extend(new)
        x2 = x2 if x2 is not None else (x * x).sum(1, keepdim=True)
        d2 = torch.minimum(d2, _sq_distances(x, x2, new).min(1).values.clamp_min(0.0))
    c = torch.stack(centers)
    x2 = x2 if x2 is not None else (x * x).sum(1, keepdim=True)
    for _ in range(iters):
        assign = _sq_distances(x, x2, c).argmin(1)
        new = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        empty = counts.squeeze(1) == 0
        new = new / counts.clamp_min(1)
        new[empty] = c[empty]  # keep a center that lost all its points rather than inventing one
        if torch.allclose(new, c, atol=1e-6):
            c = new
            break
        c = new
    return c


def _sq_distances(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances of the rows of x (with x2 = |x|^2, (N, 1)) to the rows of c, by one MatMul."""
    return x2 - 2 * x @ c.T + (c * c).sum(1)


class ScalePrototypes(nn.Module):
    """Prototypes of one scale; `forward(f)` returns the squared residual (f - nearest)^2."""

    def __init__(self, mode: str, k: int, channels: int, hw: tuple[int, int], softness: float = 0.0,
                 memory: int = 0):
        super().__init__()
        self.mode, self.channels, self.hw = mode, channels, hw
        self.softness = float(softness)
        shape = (k, channels * hw[0] * hw[1]) if mode == "image" else (k, channels)
        self.register_buffer("protos", torch.zeros(shape))
        self.register_buffer("sq_norm", torch.zeros(k))
        # Scales residuals of normal images to a mean of one, so the head sees the same range at every scale.
        self.register_buffer("res_scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.has_memory = mode == "patch" and memory > 0
        if self.has_memory:
            # Kept transposed (channels, M): the distance MatMul reads this buffer itself, so an exported graph
            # names it (prn.prototypes.<i>.memory_t) and a re-fit can find it.
            self.register_buffer("memory_t", torch.zeros(channels, memory))
            self.register_buffer("memory_sq", torch.zeros(memory))
            self.register_buffer("memory_scale", torch.ones(()))  # normals' mean distance to the memory -> 1

    def fit(self, feats: torch.Tensor, seed: int = 0) -> None:
        """feats: (N, C, H, W) features of normal images."""
        if self.mode == "image":
            x = feats.flatten(1)
        else:
            x = feats.permute(0, 2, 3, 1).reshape(-1, self.channels)
            if x.shape[0] > MAX_KMEANS_VECTORS:
                idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:MAX_KMEANS_VECTORS]
                x = x[idx]
        # Patch prototypes summarize at least PATCHES_PER_PROTOTYPE vectors each: with as many prototypes as
        # vectors every normal patch is its own prototype, its residual ~0, and normalizing by that mean blew the
        # residuals of anything else up to inf (a coarse scale of small images).
        x = x.float()
        k = self.protos.shape[0] if self.mode == "image" else min(self.protos.shape[0],
                                                                   max(1, x.shape[0] // PATCHES_PER_PROTOTYPE))
        c = _fit_centres(x, k, self.protos.shape[0], seed)
        self.protos.copy_(c)
        self.sq_norm.copy_((c * c).sum(1))
        floor = 1e-6 * float((x ** 2).mean())  # relative to the features' own energy
        self.res_scale.fill_(_unit_scale(torch.cat([self.forward_raw(f) for f in feats.split(16)]), floor))
        if self.has_memory:
            size = self.memory_t.shape[1]
            m = _fit_centres(x, min(size, max(1, x.shape[0] // PATCHES_PER_PROTOTYPE)), size, seed + 1000)
            self.memory_t.copy_(m.T)
            self.memory_sq.copy_((m * m).sum(1))
            self.memory_scale.fill_(1.0)
            self.memory_scale.fill_(_unit_scale(torch.cat([self.memory_distance(f) for f in feats.split(16)]),
                                                floor))
        self.fitted.fill_(True)

    def _pick(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """flat (..., D) -> (the nearest prototype (..., D): argmin, or the softmin blend of near ties;
        the squared distance to the nearest prototype (..., 1))."""
        d = self.sq_norm - 2 * flat @ self.protos.T  # squared distance less |f|^2
        d_min = d.min(-1, keepdim=True).values
        full_min = (d_min + (flat * flat).sum(-1, keepdim=True)).clamp_min(0.0)  # the nearest squared distance
        if self.softness <= 0:
            return self.protos[d.argmin(-1)], full_min
        # Temperature relative to that distance (scale-free); the floor keeps exact matches from dividing by 0.
        temp = self.softness * full_min + 1e-6 * flat.shape[-1]
        return torch.softmax((d_min - d) / temp, dim=-1) @ self.protos, full_min

    def _nearest(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest prototype like f, squared distance to it per image (N, 1, 1, 1) or per position (N, 1, H, W))."""
        c, (h, w) = self.channels, self.hw
        if self.mode == "image":
            near, dist = self._pick(f.reshape(-1, c * h * w))
            return near.reshape(-1, c, h, w), dist.reshape(-1, 1, 1, 1)
        near, dist = self._pick(f.permute(0, 2, 3, 1).reshape(-1, h * w, c))
        return near.reshape(-1, h, w, c).permute(0, 3, 1, 2), dist.reshape(-1, 1, h, w)

    def memory_distance(self, f: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W): the squared distance of each position's vector to its nearest memory centre, scaled so
        the fitted normals average one."""
        (h, w), c = self.hw, self.channels
        flat = f.permute(0, 2, 3, 1).reshape(-1, h * w, c)
        d = (self.memory_sq - 2 * flat @ self.memory_t).min(-1, keepdim=True).values
        d = (d + (flat * flat).sum(-1, keepdim=True)).clamp_min(0.0)
        return d.reshape(-1, 1, h, w) * self.memory_scale

    def nearest(self, f: torch.Tensor) -> torch.Tensor:
        return self._nearest(f)[0]

    def forward_raw(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.nearest(f)) ** 2

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the scaled residual (f - nearest)^2, normalized to mean 1 on normals; a distance map (N, 1, H, W), ~1 on
        normals): the nearest-neighbour distance per position in patch mode (to the memory when the scale keeps
        one), a min of smooth functions and so stable between backends; the residual's channel mean in image
        mode, whose distance is per image.
        One module call, so the exported nodes keep the module's name scope (/prototypes.<i>/), which export
        records as a keep-in-float scope (prn_edge.artefact.keep_float)."""
        near, dist = self._nearest(f)
        residual = (f - near) ** 2 * self.res_scale
        if self.mode == "image":
            return residual, residual.mean(1, keepdim=True)
        if self.has_memory:
            return residual, self.memory_distance(f)
        return residual, dist * (self.res_scale / self.channels)


class JointMemory(nn.Module):
    """A distance memory of several scales' features joined: each coarser map upsampled (bilinear, by a fixed
    factor) to the finest, concatenated, and each position averaged with its 3x3 neighbours (PatchCore's locally
    aware patches); k-means centres of the normals' joined vectors. `forward(feats)` is the squared distance of each
    position to its nearest centre, (N, 1, h, w) at the finest scale, scaled so the fitted normals average one.

    Per-scale memories find a near normal vector at each scale separately: a position whose fine texture matches
    one normal place and whose context matches another passes both. Joined, a position is normal only where one
    normal place matched it at every scale at once, which is what the kNN reference of the real-data benchmark
    measures (docs/real-data.md: BSData zero-shot AUPRO 90.3 joined, 87.9 per scale, the reference 89.9)."""

    def __init__(self, channels: tuple[int, ...], factors: tuple[int, ...], size: int, hw: tuple[int, int]):
        """channels and upsampling factors of each scale, finest first; `size` centres; `hw` the finest map's
        (height, width), fixed so the exported graph reshapes by constants (no Shape arithmetic)."""
        super().__init__()
        self.channels, self.factors, self.hw = tuple(channels), tuple(factors), tuple(hw)
        dim = sum(self.channels)
        # kept transposed (D, M), read by the distance MatMul itself: an exported graph names it
        # (prn.distance.memory.memory_t) and an INT8 re-fit finds it (prn_edge.calibrate.refit)
        self.register_buffer("memory_t", torch.zeros(dim, size))
        self.register_buffer("memory_sq", torch.zeros(size))
        self.register_buffer("memory_scale", torch.ones(()))

    def features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(N, D, h, w): the scales' maps joined at the finest and 3x3-averaged."""
        up = [f if k == 1 else F.interpolate(f, scale_factor=k, mode="bilinear", align_corners=False)
              for f, k in zip(feats, self.factors)]
        return F.avg_pool2d(torch.cat(up, 1), 3, 1, 1, count_include_pad=False)

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), d = self.hw, sum(self.channels)
        flat = x.permute(0, 2, 3, 1).reshape(-1, h * w, d)
        d2 = (self.memory_sq - 2 * flat @ self.memory_t).min(-1, keepdim=True).values
        # squared, as the per-scale memories: a square root would magnify float rounding near zero (backends then
        # disagree on normal texture) and is the op a cdist exports to, which export keeps out of the graph
        return (d2 + (flat * flat).sum(-1, keepdim=True)).clamp_min(0.0).reshape(-1, 1, h, w)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self._distance(self.features(feats)) * self.memory_scale

    @torch.no_grad()
    def fit(self, feats: list[torch.Tensor], seed: int = 0, chunk: int = 16) -> None:
        """feats: each scale's (N, C, H, W) features of the normal images."""
        joined = torch.cat([self.features([f[i:i + chunk] for f in feats]) for i in range(0, len(feats[0]), chunk)])
        x = joined.permute(0, 2, 3, 1).reshape(-1, joined.shape[1]).float()
        if x.shape[0] > MAX_KMEANS_VECTORS:
            x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:MAX_KMEANS_VECTORS]]
        size = self.memory_t.shape[1]
        m = _fit_centres(x, min(size, max(1, x.shape[0] // PATCHES_PER_PROTOTYPE)), size, seed)
        self.memory_t.copy_(m.T)
        self.memory_sq.copy_((m * m).sum(1))
        self.memory_scale.fill_(1.0)
        floor = 1e-6 * float(x.pow(2).mean())  # relative to the features' own energy
        self.memory_scale.fill_(_unit_scale(torch.cat([self._distance(j) for j in joined.split(chunk)]), floor))


def _fit_centres(x: torch.Tensor, k: int, size: int, seed: int) -> torch.Tensor:
    """`size` centres of x by k-means of k (<= size) clusters; fewer than `size` are repeated, which never
    changes a nearest distance or argmin."""
    c = kmeans(x, k, seed=seed)
    return c[torch.arange(size) % c.shape[0]] if c.shape[0] < size else c


def _unit_scale(values: torch.Tensor, floor: float) -> float:
    """1 / the mean of `values` (so they average one), or 1 when that mean is not above `floor` or not finite."""
    mean = float(values.mean())
    return 1.0 / mean if mean > floor and math.isfinite(mean) else 1.0
