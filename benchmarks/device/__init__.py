"""The accelerator check of `benchmarks/device_check.sh` (see `check.py`)."""
