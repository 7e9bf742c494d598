"""Training: losses and the training loop; checkpoints are written with prn_edge.model.checkpoint."""
