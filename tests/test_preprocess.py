import hashlib

import pytest

from serving.preprocess import PREPROCESS_VERSION, normalize_tweet
from training.data.sources import text_key


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


# Real-looking tweets touching every rule of normalize_tweet (and some that no rule should touch).
GOLDEN_TWEETS = [
    "@USER @USER Go home you're drunk!!! #MAGA URL",
    "RT @NewsDesk: BREAKING: storm warning for the coast tonight https://t.co/AbC123xyz",
    "RT @a RT @b: lol same",
    "@jess_91 omg 😂😂😂 i can't even",
    "I swear I will find you 🔪🔪 and you'll regret it",
    "that's a 🔫 emoji not a toy 🙄",
    "Tom &amp;amp; Jerry &lt;3 &quot;classic&quot; &#39;toons&#39;",
    "you are such an IDIOT &gt;:(",
    "   so   much\t\twhitespace \n\n here   ",
    "ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ ＡＮＤ ｎｕｍｂｅｒｓ １２３",
    "𝐛𝐨𝐥𝐝 𝒔𝒄𝒓𝒊𝒑𝒕 𝕕𝕠𝕦𝕓𝕝𝕖-𝕤𝕥𝕣𝕦𝕔𝕜 letters",
    "zero\u200bwidth\u200c joiners\u200d and a soft\u00adhyphen",
    "bidi \u202eoverride\u202c and \u2066isolate\u2069 marks",
    "nul\x00byte, bell\x07 and del\x7f chars",
    "lone \ud83d surrogate half",
    "Café naïve résumé — “smart quotes” and ‘single’ ones…",
    "#StopHate is trending, #BlackLivesMatter #MeToo",
    "check www.example.com/page?id=7 and HTTP://SHOUTY.EXAMPLE/X now",
    "email me at someone@example.com or DM @Some_One_99",
    "👍🏽 skin tones 👩‍👩‍👧 families and flags 🇬🇧🇫🇷",
    "hearts ❤️ vs ♥ vs <3 and ☺ vs 😊",
    "ALL CAPS RAGE!!!!! WHY WOULD YOU DO THIS?!?!",
    "numbers 1st 2nd ½ ² ③ and ™ © ®",
    "arabic أنت غبي and hebrew שלום mixed in",
    "日本語のツイート、絵文字も🎌",
    "¿Qué pasa? ¡Nada! spanish punctuation",
    "go back to where you came from, nobody wants you here",
    "kill it with fire 🔥🔥 (the bug, obviously)",
    "",
    "URL URL URL",
    "@user",
    "tabs\tand\r\nwindows line endings\r\n",
]
# sha256 of the normalized GOLDEN_TWEETS joined by "\n", as of PREPROCESS_VERSION "1".
GOLDEN_DIGEST = "0a78a17b2ffac0c37e5189fa21ac802dc4e80a3130377620841b8513487bfe00"


def test_normalized_output_is_pinned_to_the_version():
    out = "\n".join(normalize_tweet(t) for t in GOLDEN_TWEETS)
    digest = hashlib.sha256(out.encode("utf-8")).hexdigest()
    assert (PREPROCESS_VERSION, digest) == ("1", GOLDEN_DIGEST), (
        "normalize_tweet's output changed: bump PREPROCESS_VERSION (serving/preprocess.py; artifacts and the data "
        f"cache key record it), then pin the new version here and GOLDEN_DIGEST = {digest!r}"
    )
