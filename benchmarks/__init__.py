"""Benchmarks of tks-jax (not tests): see benchmarks/train_step.py and benchmarks/peers."""
