"""The one definition of the policies tweetguard scores: names, order, meaning, table columns.

Everything else (data mapping, training head, policy card, API schemas, `tweetguard predict`'s output columns, the
MLflow Model's signature) imports from here.
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

TEXT_COLUMN = "text"  # the MLflow Model's input column (the texts to score)


# A scored table's cells per policy: column suffix <- key of a `Predictor.predict` result, in column order.
_CELLS = (("probability", "scores"), ("flagged", "flags"), ("action", "actions"))


def output_columns(policies: tuple[str, ...]) -> list[str]:
    """The score columns of a scored table (`tweetguard predict`, the MLflow Model), in this order: per policy
    `<policy>_probability`, `<policy>_flagged`, `<policy>_action`."""
    return [f"{p}_{suffix}" for p in policies for suffix, _ in _CELLS]


def output_row(result: dict | None, policies: tuple[str, ...]) -> dict:
    """One `Predictor.predict` result as those columns' cells, in their order (None: every cell empty)."""
    return {f"{p}_{suffix}": None if result is None else result[key][p] for p in policies for suffix, key in _CELLS}


def threshold_param(policy: str) -> str:
    """The MLflow Model's inference param that overrides `policy`'s flag threshold for one call."""
    return f"{policy}_threshold"
