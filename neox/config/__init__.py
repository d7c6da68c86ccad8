"""Upstream GPT-NeoX YAML configs: loading, schema, derived values and validation."""
