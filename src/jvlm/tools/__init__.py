"""Build-time tooling: building tokenizers and random-weight checkpoints.

Training (from a preset), tests and benchmarks use it; the runtime layers (processing, model,
weights, loading, inference, serve) never import it, which ``tests/test_architecture.py``
checks.
"""
