"""tweetguard serving runtime: policies, preprocessing, model artifact, Predictor, BentoML service."""
