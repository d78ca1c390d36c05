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
