"""Publishing a registered version's model cards: `attach_model_card` writes the markdown card
(`training.evaluation.modelcard`) as the version's description and logs `model_card/v<N>/model_card.md` to the
version's training run, beside (never inside) the `model/` directory, whose files do not change once registered;
for a transformer also `README.md`, the same text as a Hugging Face Hub model card (`training.evaluation.hubcard`),
with the test results once evaluated. The registry's finish step calls it after registration
(`training.registry.finish`); `tweetguard evaluate` of a version on test calls it again with the test numbers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from serving.artifact import read_card
from training.evaluation.hubcard import HUB_README, hub_model_card
from training.evaluation.modelcard import model_card_markdown
from training.tracking.runs import Run, client
from training.tracking.versions import set_description

CARD_MD = "model_card.md"


def attach_model_card(name: str, version: str, model_dir: str | Path, *, tracking_uri: str,
                      evaluation: dict | None = None) -> str:
    """Write the card to the registered version (description) and its training run (artifact); returns it.
    Training attaches it at registration; `tweetguard evaluate` of the version on test attaches it again with
    the test numbers (`evaluation`)."""
    card = read_card(model_dir)
    text = model_card_markdown(card, name=name, version=version, evaluation=evaluation)
    set_description(name, version, text, tracking_uri)
    run_id = client(tracking_uri).get_model_version(name, version).run_id
    if run_id:
        run = Run(client(tracking_uri), run_id, tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / CARD_MD).write_text(text, encoding="utf-8")
            run.log_artifact_file(Path(tmp) / CARD_MD, f"model_card/v{version}")
            if (Path(model_dir) / "config.json").is_file():  # a transformer: its Hub card, with any test results
                hub_model_card(card, name=name, version=version, evaluation=evaluation).save(Path(tmp) / HUB_README)
                run.log_artifact_file(Path(tmp) / HUB_README, f"model_card/v{version}")
    return text
