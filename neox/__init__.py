"""neox: a GPT-NeoX-compatible training engine for Slurm clusters.

Public API (kept small; tests, tools and users rely on it):

- ``neox.config.load(paths, overrides) -> Config``
- ``neox.model.build(config) -> torch.nn.Module``
- ``neox.checkpoint.load_model(path, config=None) -> torch.nn.Module``
- the model's ``forward(input_ids) -> logits``
"""

__version__ = "0.1.0"
