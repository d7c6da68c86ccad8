"""Rank, world size and master address from Slurm or torchrun variables; local multi-process launch."""
