"""awmjax: train tool-using agents with GRPO on synthetic SQL-backed worlds, in JAX.

Importing this package is cheap: jax is imported only by the modules that need it,
so `awmjax worlds ...` runs without touching an accelerator.
"""

__version__ = "0.1.0"
