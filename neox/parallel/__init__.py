"""Process-group topology (data × pipe × tensor), tensor-parallel layers and collectives."""
