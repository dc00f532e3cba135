"""result.json's ``identity``: the fields tables filter, group and label runs by.

A recipe's ``identity()`` returns :func:`run_identity` with its own fields (model, task, length of
training); :class:`~alphaadam.train.session.RunSession` adds ``variant``
(:func:`alphaadam.runs.rundir.variant_hash`), which tells apart runs that differ in any other
setting, so that a table never averages two configurations as if they were seeds of one.
"""

from __future__ import annotations

from omegaconf import DictConfig

# Optimizer settings shown as identity fields of their own when set: a table can then name them
# (a row per GaLore or LDAdam rank) rather than only tell them apart by ``variant``.
SHOWN_OPTIMIZER_SETTINGS = ("rank",)


def run_identity(settings: DictConfig, **fields) -> dict:
    """The optimizer, its learning rate and the seed, then ``fields``, then the optimizer settings
    worth showing (:data:`SHOWN_OPTIMIZER_SETTINGS`) that are set."""
    optimizer = settings.optimizer
    identity = {"optimizer": optimizer.name, "lr": optimizer.get("lr"), "seed": settings.seed, **fields}
    for key in SHOWN_OPTIMIZER_SETTINGS:
        if optimizer.get(key) is not None:
            identity[key] = optimizer[key]
    return identity
