"""Stage 5 of `make run` (`tweetguard package` / `serve`) and batch prediction (`tweetguard predict`)."""
