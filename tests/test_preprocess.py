import pytest

from serving.preprocess import PREPROCESS_VERSION, normalize_tweet
from training.sources import text_key


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("@USER You are an idiot URL", "@user you are an idiot"),
        ("@bob @alice @carol hi", "@user hi"),  # a run of mentions collapses
        ("RT @someone: lol", "@user: lol"),  # leading retweet marker dropped
        ("check https://t.co/abc and www.x.com now", "check and now"),
        ("Tom &amp;amp; Jerry &lt;3", "tom & jerry <3"),  # double-escaped entities
        ("I will 🔪 you", "i will kitchen knife you"),  # emoji become words, not [UNK]
        ("🔫", "gun"),
        ("zero\u200bwidth\u202eRTL", "zerowidthrtl"),
        ("nul\x00byte", "nul byte"),
        ("lone \udc80 surrogate", "lone surrogate"),
        ("𝓯𝓪𝓷𝓬𝔂", "fancy"),
        ("  lots \n of\t space ", "lots of space"),
    ],
)
def test_normalize_tweet(raw, expected):
    assert normalize_tweet(raw) == expected


def test_normalize_is_idempotent_and_versioned():
    text = "RT @X: I'll 🔪 u &amp; ur dog https://t.co/1"
    once = normalize_tweet(text)
    assert normalize_tweet(once) == once
    assert PREPROCESS_VERSION == "1"  # bump deliberately with any change of output; artifacts record it


def test_reformatted_copies_collide():
    variants = [
        "@USER @USER Go home you're drunk!!! #MAGA URL",
        "@user go home you're drunk #maga",
        "@realPerson Go home   you’re drunk!!! #MAGA https://t.co/xyz",
    ]
    assert len({text_key(v) for v in variants}) == 1
    assert text_key("go home you are drunk") != text_key(variants[0])
