"""Stage 4 of `make run` (`tweetguard promote`): turn a trained artifact into a registered version, and promote it.

`finish` (calibrate -> card -> reference -> register -> final metrics: the end of train, distill and quantize),
`pyfunc` (the MLflow Model wrapping the serving Predictor; `pyfunc_model` is its code) and `promote` (the
promotion gate). MLflow itself (runs, model references, registry versions and aliases) is `training.tracking`.
"""
