"""Stage 1 of `make run` (`tweetguard data`): the shared datasets -> one unified, leak-free, cached dataset.

`sources` (the declarations' schema) -> `readers` (files -> raw rows) -> `prepare` (policy mapping,
dedup, splits, cache) -> `card` (the data report).
"""
