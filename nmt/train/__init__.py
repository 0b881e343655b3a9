"""Training: loss, optimisers and schedules, checkpoints, monitoring, the training loop."""
