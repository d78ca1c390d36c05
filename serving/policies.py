"""The one definition of the policies tweetguard scores: names, order, meaning.

Everything else (data mapping, training head, policy card, API schemas) imports from here.
"""

from __future__ import annotations

POLICIES: tuple[str, ...] = ("abusive", "harassment", "violence")

DESCRIPTIONS: dict[str, str] = {
    "abusive": "insults, slurs, demeaning or dehumanizing language",
    "harassment": "abuse targeted at a specific person: attacks on a named/addressed individual, "
    "piling on, outing or exposing someone",
    "violence": "threats, wishing or celebrating harm, inciting or glorifying violence",
}

# Label values in the unified data and in training tensors.
POSITIVE, NEGATIVE, UNKNOWN = 1, 0, -1
