"""Datasets: mmap ``.bin/.idx`` reader/writer, GPT sample index, blending, packing, loss masks, loaders."""
