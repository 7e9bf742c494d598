"""Training: losses, checkpoints and the training loop."""
