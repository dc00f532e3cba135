"""The engine of a training run, shared by every recipe: the run's life (``session``), the config
keys every recipe has and validation (``config``), result.json's identity (``identity``), schedules,
distributed set-up, precision, random state and checkpoints, divergence, measurements, progress."""
