"""prn_edge: Prototypical Residual Networks for visual anomaly detection on the edge.

Data flow, and the package layout that follows it:
data -> model -> train / evaluate -> export -> calibrate -> build -> runtime -> line.
"""

__version__ = "0.1.0"

# Checkpoints and exported artefacts carry this; bump it when their layout changes incompatibly.
FORMAT_VERSION = 1
