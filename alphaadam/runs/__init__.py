"""Run directories: resolved config, metrics log, result record and checkpoint of one training run."""

from alphaadam.runs.files import read_json, save_torch, write_bytes, write_json, write_text
from alphaadam.runs.metrics import METRICS_FILE, MetricsLog
from alphaadam.runs.result import (
    FINAL_STATUSES,
    RESULT_FILE,
    STATUSES,
    new_result,
    read_result,
    write_result,
)
from alphaadam.runs.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    config_hash,
    identity_config,
    run_dir_for,
    variant_hash,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "FINAL_STATUSES",
    "METRICS_FILE",
    "RESULT_FILE",
    "STATUSES",
    "MetricsLog",
    "config_hash",
    "identity_config",
    "new_result",
    "read_json",
    "read_result",
    "run_dir_for",
    "variant_hash",
    "save_torch",
    "write_bytes",
    "write_json",
    "write_result",
    "write_text",
]
