"""Stage 2 of `make run` (`tweetguard train`): fine-tune the model (or fit the TF-IDF baseline) on the prepared data.

`command` (the fine-tuning run: setup -> loop inside an MLflow run, then the `finish` the command hands it) drives
`loop` (steps, validation, checkpoints) over `batches`, with `checkpoint`, `device` and `distributed` (torchrun);
`validation` scores validation during training; `calibration` fits calibration + thresholds into the policy card;
`augment` and `source_terms` shape the training data and loss; `baseline` is the TF-IDF model; `distill` (the
student and its teacher's logits) and `quantize` (the int8 graph) make the fast tier. Nothing here registers a
model: the commands in training.pipeline call this stage, then training.registry.finish.
"""
