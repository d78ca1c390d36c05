"""Stage 1 of `make run` (`tweetguard data`): the shared datasets -> one unified, leak-free, cached dataset.

`sources` (the declarations' schema and label mapping) -> `readers` (a source's files -> raw rows, through
`files`) -> `prepare` (policy labels, `splits`: split assignment, dedup, leak removal; the cache) -> `card`
(the data report).
"""
