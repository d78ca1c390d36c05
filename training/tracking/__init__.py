"""Experiment tracking, the base every stage stands on: MLflow behind three small modules.

`runs` (tracking runs: params, metrics, artifacts, datasets; the URI and its reachability), `refs` (model
references -> artifact directories) and `versions` (the model registry: versions, aliases, tags, champion history).
They import nothing of `training` but `training.config`; the stages import them, never the MLflow API itself.
"""
