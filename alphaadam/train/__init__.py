"""Training-loop pieces that recipes share: configs, schedules, distributed set-up, precision,
random state and checkpoints, divergence, measurements, progress output."""
