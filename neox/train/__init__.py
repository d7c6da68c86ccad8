"""The training loop, optimizer and LR schedule, checkpoints and metrics."""
