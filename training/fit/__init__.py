"""Stage 2 of `make run` (`tweetguard train`): fine-tune (or fit the TF-IDF baseline), calibrate on
validation, log the MLflow run and register the model.

`command` (the train command: setup -> loop -> finish) drives `loop` (steps, validation, checkpoints) over
`batches`, with `checkpoint` and `distributed` (torchrun); `monitor` scores validation during training;
`calibration` is the last stage (calibration + thresholds into the policy card); `baseline` is the TF-IDF model.
"""
