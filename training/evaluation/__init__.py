"""Stage 3 of `make run` (`tweetguard evaluate`, `tweetguard monitor`): score a model on a split through the serving
code and report; check served scores for drift.

Scores through `training.scorer` and metrics from `training.metrics` (base modules, shared with training);
`published` (published-comparable benchmarks), `bias` (identity-term slices), `behaviour` (the behaviour suite),
`plots`, `render` (markdown tables), `evaluate` (the command's pipeline: report dir + MLflow evaluation run),
`compare`; `reference` (a version's validation score distribution) and `monitor` (served scores vs it); the model
cards: `modelcard` (markdown), `hubcard` (the Hugging Face Hub card) and `cards` (attached to a version).
"""
