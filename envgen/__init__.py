"""envgen: worlds as data, the validation gate, generators and compiled state pools.

Pure Python: nothing here imports jax, so the worlds can be used from any framework.
"""

from envgen.world import World, WorldFormatError, load, loads  # noqa: F401
