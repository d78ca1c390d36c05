"""The commands that span stages: each runs fit-stage training and then the registry's finish.

`train` (`tweetguard train`: fine-tune or the TF-IDF baseline, then `training.registry.finish`), `distill`
(`tweetguard distill`), `quantize` (`tweetguard quantize`) and `search` (`tweetguard tune`: trials of `train`, then
the winner). `training.cli` parses the arguments and calls them.
"""
