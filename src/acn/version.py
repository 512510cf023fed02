"""The package's version, in a module of its own so that files and checkpoints can record it
without importing anything else."""

__version__ = "0.1.0"
