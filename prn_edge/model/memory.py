"""Memory a PRN configuration needs, estimated from its shapes before anything is allocated.

An image size or a prototype count far beyond what the machine holds is then refused with a message, instead of
the kernel killing the process minutes into data loading. The estimate counts the tensors that grow with the
configuration (images, features, prototype distances, attention, activations). It is rough and errs low
(measured peaks were 1.1 to 2.5 times the estimate), so it refuses only what cannot fit.
"""
from __future__ import annotations

import os

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from .backbones import BACKBONES
from .prototypes import MAX_KMEANS_VECTORS, default_k
from .shapes import attention_sizes, head_hws

FLOAT = 4
# Float values per input pixel and image at the peak of a training step (the head's activations under autograd
# and their gradients) and of an encoder pass without gradients; chosen so that the estimate stays below the peaks
# measured on prn-edge (256 and 512 px, 50 normals, batch 8) and prn-paper (256 px).
ACTIVATIONS_TRAIN, ACTIVATIONS_INFER = 128, 64
FIT_CHUNK = 16  # images per encoder pass while prototypes are fitted (PRN.fit_prototypes)


def estimate_bytes(cfg: ModelConfig, batch: int, num_images: int, training: bool = True) -> int:
    """Peak bytes of fitting prototypes on `num_images` normals and training at `batch` (training=True), or of
    one prediction at `batch` (training=False); an image_size "auto" not chosen yet counts as its square."""
    cfg = cfg.sized()
    with torch.device("meta"):  # shapes only: channels without allocating weights
        channels = BACKBONES[cfg.backbone].build().channels
    h, w = cfg.hw
    pixels = h * w
    sides = head_hws(cfg.hw)
    hws = [sh * sw for sh, sw in sides]
    chans = channels[1:]
    k = cfg.num_prototypes or default_k(num_images, cfg.prototype_mode)
    patch = cfg.prototype_mode == "patch"
    protos = k * (sum(chans) if patch else sum(c * hw for c, hw in zip(chans, hws))) * FLOAT
    # the distance memories (ScalePrototypes, JointMemory): centres, and a distance matrix per scale
    mem = cfg.memory_size
    memories = int(cfg.scale_memory and mem > 0) + int(cfg.joint_memory)  # per scale, joint: each as large
    protos += memories * mem * sum(chans[i] for i in cfg.distance_scales) * FLOAT

    def distances(n: int) -> int:  # the distance matrix of the largest scale and its softmin temporaries
        largest = max([6 * hws[0] * k] + [2 * hws[i] * mem for i in cfg.distance_scales]) if patch else 6 * k
        return n * largest * FLOAT

    attention = 0
    for i in cfg.msa_scales:
        for p in attention_sizes(cfg.patch_sizes, sides[i]):  # as MultiSizeAttention keeps them
            attention += batch * cfg.heads * (hws[i] // (p * p)) ** 2 * FLOAT * (3 if training else 2)
    per_pixel = ACTIVATIONS_TRAIN if training else ACTIVATIONS_INFER
    run = protos + distances(batch) + attention + batch * pixels * per_pixel * FLOAT
    if not training:
        return run
    images = num_images * 3 * pixels * (1 + FLOAT)  # uint8 as loaded, float for the prototype fit
    features = 2 * num_images * sum(c * hw for c, hw in zip(chans, hws)) * FLOAT
    vectors = min(MAX_KMEANS_VECTORS, num_images * hws[0]) if patch else num_images
    encoder = FIT_CHUNK * pixels * ACTIVATIONS_INFER * FLOAT
    if cfg.joint_memory:  # the joined, averaged features of every image at the finest distance scale, and a copy
        features += 2 * num_images * hws[min(cfg.distance_scales)] * sum(chans[i] for i in cfg.distance_scales) * FLOAT
    fit = features + protos + max(3 * vectors * max(k, mem) * FLOAT, distances(FIT_CHUNK), encoder)
    return images + max(fit, run)


def available_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg: ModelConfig, batch: int, num_images: int, training: bool = True) -> None:
    """ConfigError, saying how much it would need, when the estimate exceeds the memory available now."""
    need, have = estimate_bytes(cfg, batch, num_images, training), available_bytes()
    if need > have:
        what = (f"training at train.batch_size={batch} on {num_images} normal images" if training
                else f"a batch of {batch}")
        raise ConfigError(f"model.image_size={cfg.size_text} with model.num_prototypes="
                          f"{cfg.num_prototypes or 'auto'} needs about {need / 2**30:.1f} GiB of memory for {what}, "
                          f"but {have / 2**30:.1f} GiB are available; lower model.image_size or model.num_prototypes"
                          + (" or train.batch_size" if training else ""))
