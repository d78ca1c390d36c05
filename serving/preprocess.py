"""The one versioned tweet normalization, used by data preparation, training, evaluation and serving.

Bump PREPROCESS_VERSION whenever the output of `normalize_tweet` changes for any input: the version is
stored in every model artifact and checked at load time, and it is part of the data cache key.
"""

from __future__ import annotations

import html
import re
import unicodedata

import emoji

PREPROCESS_VERSION = "1"

# Zero-width and bidi control characters carry no meaning for the model but break token matching.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_URL = re.compile(r"(?:https?://|www\.)\S+|\bURL\b", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_MENTION_RUN = re.compile(r"(?:@user\s*){2,}")
_RETWEET = re.compile(r"^(?:rt\s+)+(?=@user)")
_SPACE = re.compile(r"\s+")


# Every emoji contains a code point from these blocks; the emoji tokenizer is slow, so skip texts without one.
_MAYBE_EMOJI = re.compile("[\u00a9\u00ae\u2000-\u3300\ufe0f\U0001f000-\U0001ffff\U000e0000-\U000e007f]")


def _demojize(text: str) -> str:
    # The backbone vocabulary has no emoji (each would become [UNK]); 🔪 -> " kitchen knife ".
    if not _MAYBE_EMOJI.search(text):
        return text
    return emoji.replace_emoji(text, replace=lambda e, data: f" {_EMOJI_WORDS.get(e) or _emoji_name(data)} ")


def _emoji_name(data: dict) -> str:
    return data["en"].strip(":").replace("_", " ")


# Where the Unicode name hides the meaning that matters for threats (vendors redrew 🔫 as a toy in 2016,
# but in old tweets and in intent it is a gun).
_EMOJI_WORDS = {"\U0001f52b": "gun"}


def normalize_tweet(text: str) -> str:
    """Normalize one tweet for the model (version PREPROCESS_VERSION).

    - HTML entities decoded (twice: scraped tweets are often double-escaped, ``&amp;amp;``);
    - invisible, control and lone-surrogate characters removed, Unicode NFKC (fancy letters to plain);
    - emoji translated to their English names, so their meaning reaches the model;
    - URLs and the ``URL`` placeholder dropped; every user mention becomes ``@user`` and a run of mentions
      collapses to one (so ``@USER @USER hi`` and ``@bob hi`` collide), a leading retweet marker is dropped;
    - lowercased (the bundled backbone is uncased) and whitespace collapsed.
    """
    text = html.unescape(html.unescape(text))
    text = _SURROGATE.sub("", _CONTROL.sub(" ", _INVISIBLE.sub("", text)))
    text = unicodedata.normalize("NFKC", text)
    text = _demojize(text)
    text = _URL.sub(" ", text)
    text = _MENTION.sub("@user", text.lower())
    text = _MENTION_RUN.sub("@user ", text)
    text = _SPACE.sub(" ", text).strip()
    text = _RETWEET.sub("", text)
    return text.strip()
