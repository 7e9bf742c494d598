"""INT8 calibration runs: calibration-set selection, Q/DQ quantization, accuracy gate, sensitivity fallback."""
