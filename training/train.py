"""`python -m training.train ARGS` = `tweetguard train ARGS` (kept for torchrun: `torchrun ... -m training.train`)."""

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
