"""Stage 4 of `make run` (`tweetguard promote`) and everything that talks to MLflow.

`tracking` (runs), `refs` (model references -> files), `versions` (registration, aliases, tags, champion
history), `promote` (the promotion gate) and `modelcard` (the markdown card attached to a version).
"""
