"""The GPT-NeoX transformer and its Llama-style options."""
