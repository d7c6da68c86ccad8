"""The GPT-NeoX transformer and its Llama-style options.

``build(config) -> GPTModel`` is the public entry point; ``build_layers(config)`` gives the
same model as the NeoX-numbered list of L + 5 layers (for pipeline stages). Files:
:mod:`~neox.model.gpt` (layer list, embedding, head, model), :mod:`~neox.model.transformer`
(the block), :mod:`~neox.model.attention`, :mod:`~neox.model.attention_backends`,
:mod:`~neox.model.mlp`, :mod:`~neox.model.rotary`, :mod:`~neox.model.norms`,
:mod:`~neox.model.init`, :mod:`~neox.model.linears`.
"""

from neox.model.gpt import GPTModel, build, build_layers

__all__ = ["GPTModel", "build", "build_layers"]
