"""tweetguard training: config, data, model, train, evaluate, baseline, registry, CLI."""
