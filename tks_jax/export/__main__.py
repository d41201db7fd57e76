"""``python -m tks_jax.export --workdir W --out model.nir``."""

from tks_jax.export.cli import main

raise SystemExit(main())
