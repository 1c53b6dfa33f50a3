"""Benchmarks of the trainer side (``python -m edgemeta.benchmarks.<name>``)."""
