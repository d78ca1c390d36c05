"""`tweetguard explain`: each text with the words that drove each policy's score marked (serving.reasons).

    tweetguard explain --model REF --text "i will find you" [--text ...] [--method occlusion|integrated_gradients]
    tweetguard explain --model REF --input FILE [--text-column text] [--json]

Per text and policy: the calibrated score, flag and action (the card's), then the text with its top words marked
and their contributions: in colour on a terminal that supports it (red pushes the score up, blue down), with
plain markers otherwise (`[word +0.31]`). `--json`: one JSON object per text (scores, flags, actions, reasons).
The reasons columns of `tweetguard predict --explain` come from `reasons_cells` here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from serving.policies import POLICIES
from serving.reasons import Reasons

RED, BLUE, RESET = "\033[31m", "\033[34m", "\033[0m"


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def mark(text: str, reasons: list[dict], colour: bool) -> str:
    """`text` with each listed word marked in place, its contribution beside it."""
    out, at = [], 0
    for r in sorted(reasons, key=lambda r: r["start"]):
        c = r["contribution"]
        word = f"{r['word']} {c:+.2f}"
        out += [text[at:r["start"]], f"{RED if c > 0 else BLUE}{word}{RESET}" if colour else f"[{word}]"]
        at = r["end"]
    return "".join(out + [text[at:]])


def render(text: str, result: dict, reasons: Reasons, colour: bool) -> str:
    """One text's block: per policy its score, flag, action and the marked text; then any words past the window."""
    lines = [f"text: {text}"]
    for p in POLICIES:
        state = f"{result['scores'][p]:.3f} flag={'yes' if result['flags'][p] else 'no'} action={result['actions'][p]}"
        lines.append(f"  {p:<10} {state}  {mark(text, reasons.policies[p], colour)}")
    if reasons.outside_window:
        words = " ".join(w["word"] for w in reasons.outside_window)
        lines.append(f"  past the model window (not scored, not attributed): {words}")
    return "\n".join(lines)


def as_json(text: str, result: dict, reasons: Reasons) -> str:
    return json.dumps({"text": text, **{k: result[k] for k in ("scores", "flags", "actions", "truncated")},
                       "method": reasons.method, "reasons": reasons.policies,
                       "words_outside_window": reasons.outside_window}, ensure_ascii=False)


def reasons_cells(reasons: Reasons | None) -> dict[str, list | None]:
    """`tweetguard predict --explain`'s columns: `<policy>_reasons`, the top words as a list of {word, start, end,
    contribution} (None: a row that was not scored)."""
    return {f"{p}_reasons": None if reasons is None else reasons.policies[p] for p in POLICIES}


def explain_texts(predictor, texts: list[str], *, method: str, top_k: int, as_json_lines: bool,
                  out: TextIO | None = None) -> None:
    from serving.reasons import explain

    out = out or sys.stdout
    results = predictor.predict(texts)
    colour = use_colour(out)
    for text, result, reasons in zip(texts, results, explain(predictor, texts, method=method, top_k=top_k)):
        print(as_json(text, result, reasons) if as_json_lines else render(text, result, reasons, colour), file=out)


# Benign sentences that only mention an identity (written here from docs/policies.md: an identity mention is not
# abuse); `{term}` is an identity term of evaluation.identity_terms. Used by identity_contributions only.
BENIGN_TEMPLATES = ("i am {term}", "my neighbour is {term}", "we had dinner with our {term} friends",
                    "the new teacher is {term}")


def error_reasons(predictor, errors: dict, *, per_kind: int = 3, top_k: int = 3) -> str:
    """Markdown: for each policy's worst errors (`tweetguard evaluate`'s report["errors"]), the texts with that
    policy's top words marked (occlusion, as served): why a false positive was flagged, what a miss scored on."""
    from serving.reasons import explain

    out = []
    for policy, kinds in errors.items():
        for kind, rows in kinds.items():
            texts = [r["text"] for r in rows[:per_kind]]
            if not texts:
                continue
            out.append(f"**{policy}: {kind.replace('_', ' ')}**\n")
            for row, reasons in zip(rows, explain(predictor, texts, top_k=top_k)):
                out.append(f"- {row['score']:.3f} ({row['source']}): {mark(row['text'], reasons.policies[policy], False)}")
            out.append("")
    return "\n".join(out)


def identity_contributions(predictor, terms: dict[str, dict[str, list[str]]], *, per_subgroup: int = 2,
                           templates: tuple[str, ...] = BENIGN_TEMPLATES) -> list[dict]:
    """Per identity subgroup (its first `per_subgroup` terms, each in every benign template): the mean score and
    the mean occlusion contribution of the identity term's words to each policy. A term that pushes a benign
    sentence's abusive score up is a learned identity bias."""
    from serving.reasons import explain

    rows = []
    for category, groups in terms.items():
        for subgroup, group_terms in groups.items():
            texts, spans = [], []
            for term in group_terms[:per_subgroup]:
                for template in templates:
                    text = template.format(term=term)
                    start = template.index("{term}")
                    texts.append(text)
                    spans.append((start, start + len(term)))
            found = explain(predictor, texts, top_k=10_000)
            row = {"category": category, "subgroup": subgroup, "texts": len(texts)}
            for p in POLICIES:
                row[f"{p}_score"] = float(sum(r.score[p] for r in found) / len(found))
                row[f"{p}_term_contribution"] = float(sum(
                    sum(w["contribution"] for w in r.policies[p] if a <= w["start"] < b)
                    for r, (a, b) in zip(found, spans)) / len(found))
            rows.append(row)
    return rows
