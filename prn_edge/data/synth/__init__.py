"""Training-time anomaly synthesis: Perlin masks, foreign textures, the generator and a preview."""
from .anomalies import KINDS, AnomalyGenerator, estimate_foreground
from .perlin import perlin_mask, perlin_noise
from .preview import synth_preview
from .textures import builtin_textures, load_texture_dir

__all__ = ["KINDS", "AnomalyGenerator", "estimate_foreground", "perlin_mask", "perlin_noise", "synth_preview",
           "builtin_textures", "load_texture_dir"]
