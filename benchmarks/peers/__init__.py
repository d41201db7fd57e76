"""SpikingJelly peer of the benchmark (its own venv) and the alternating runner."""
