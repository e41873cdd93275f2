"""One training run: the recipe that assembles it from a config, the one training loop, checkpoints, logs,
interruption, several runs in one process, replay of a ZO run's backbone, and plots of its curves."""
