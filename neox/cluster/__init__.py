"""The HPC layer's logic: site profiles, Slurm job rendering and submission, walltime chaining,
job status and logs, VS Code tunnels, NCCL/OFI preflight checks, the runtime self-check and the
image build.

``slurm/`` (templates, site profiles) and ``containers/`` (image definition, install script) hold
no logic of their own: whatever they need computed, a ``neox slurm``/``neox cluster``/``neox
verify`` command computes here, where it is tested. Nothing in this package imports torch at
module level, so the login-node commands stay fast and work without a GPU stack.
"""
