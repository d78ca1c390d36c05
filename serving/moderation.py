"""Our three policies in the OpenAI moderation response shape (``POST /v1/moderations``).

Mapping (documented in docs/serving.md; the score and the flag of a category come from the same rule):

- ``harassment``             <- max(abusive, harassment); flagged if abusive or harassment is flagged
- ``harassment/threatening`` <- min(harassment, violence); flagged if both are flagged
- ``violence``               <- violence
- every other OpenAI category is not modeled: present as ``false`` / ``0.0`` so strict clients parse, applied
  to no input type, and listed in ``results[].tweetguard.unmodeled`` next to our own scores, flags and actions
  (decision tiers).

``flagged`` is true when any of our policies is flagged (the same as any mapped category, since
``harassment`` covers ``abusive``). Pure functions: no openai import at serving time; a test checks these
names against the installed ``openai`` client's types.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from serving.schemas import TextResult

# OpenAI's category names as they appear on the wire (openai.types.moderation.Categories aliases).
OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MODELED: tuple[str, ...] = ("harassment", "harassment/threatening", "violence")
UNMODELED: tuple[str, ...] = tuple(c for c in OPENAI_CATEGORIES if c not in MODELED)


def map_scores(scores: Mapping[str, float], flags: Mapping[str, bool]) -> tuple[dict[str, float], dict[str, bool]]:
    """Our per-policy scores/flags -> OpenAI category_scores/categories (all categories present)."""
    cat_scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    cats = dict.fromkeys(OPENAI_CATEGORIES, False)
    cat_scores["harassment"] = max(scores["abusive"], scores["harassment"])
    cats["harassment"] = flags["abusive"] or flags["harassment"]
    # A threat aimed at a person needs both: targeted (harassment) and violent.
    cat_scores["harassment/threatening"] = min(scores["harassment"], scores["violence"])
    cats["harassment/threatening"] = flags["harassment"] and flags["violence"]
    cat_scores["violence"] = scores["violence"]
    cats["violence"] = flags["violence"]
    return cat_scores, cats


def moderation_result(result: TextResult) -> dict:
    cat_scores, cats = map_scores(result.scores, result.flags)
    return {
        "flagged": any(result.flags.values()),
        "categories": cats,
        "category_scores": cat_scores,
        "category_applied_input_types": {c: (["text"] if c in MODELED else []) for c in OPENAI_CATEGORIES},
        # Extra field (OpenAI's client models allow extras): our own policies, untouched by the mapping.
        "tweetguard": {
            "scores": result.scores,
            "flags": result.flags,
            "actions": result.actions,
            "truncated": result.truncated,
            "decision_id": result.decision_id,
            "unmodeled": list(UNMODELED),
            # Asked for with {"tweetguard": {"explain": true}}: the same reasons and statements as /classify's.
            **(result.model_dump(include={"reasons", "statements", "words_outside_window"}) if result.reasons
               else {}),
        },
    }


def moderation_response(results: list[TextResult], model: str) -> dict:
    """The full ``ModerationCreateResponse`` body for one request."""
    return {
        "id": f"modr-{uuid.uuid4().hex}",
        "model": model,
        "results": [moderation_result(r) for r in results],
    }
