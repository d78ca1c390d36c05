"""Stage 3 of `make run` (`tweetguard evaluate`): score a model on a split through the serving code and report.

`scorer` (any model -> logits -> calibrated probabilities), `metrics` (the one metrics module), `published`
(published-comparable benchmarks), `bias` (identity-term slices), `plots`, `render` (markdown tables) and
`evaluate` (the command's pipeline: report dir + MLflow evaluation run).
"""
