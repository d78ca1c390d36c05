"""A tiny random BERT model artifact built in-test (transformers' BertModelTester idea), for any test tier.

`make_tiny_artifact(path)` writes a complete, servable artifact directory through the real `save_artifact`:
HF config + safetensors + WordPiece tokenizer + `policy_card.json`. It saves and loads in well under a second.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from serving.artifact import Calibration, PolicyCard, PolicySpec, save_artifact
from serving.modeling import BertMeanPoolForMultiLabel, _label_kwargs
from serving.policies import DESCRIPTIONS, POLICIES

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "@user you are a the and i to it is not no so stupid idiot hate kill hurt love great day good "
    "die go home shut up will find your ugly".split()
)
# Single letters (plus "##" continuations) make every lowercase word tokenizable without [UNK], so token
# counts grow with text length, which the truncation tests rely on.
LETTERS = list(string.ascii_lowercase)
VOCAB = SPECIALS + LETTERS + [f"##{c}" for c in LETTERS] + list(".,!?'#") + WORDS

TINY_CONFIG: dict[str, Any] = dict(
    vocab_size=len(VOCAB),  # ~100
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=64,
    # Wider than BERT's 0.02 so random logits spread over a range where thresholds and calibration matter.
    initializer_range=0.5,
)
TINY_MAX_LENGTH = 32
TINY_TEMPERATURE = 2.0


def tiny_tokenizer(folder: Path) -> BertTokenizer:
    """A WordPiece tokenizer from a vocab file written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # transformers 5: the argument is `vocab` (a path or a dict); the old `vocab_file=` is silently ignored
    # and yields a 5-token vocabulary.
    return BertTokenizer(vocab=str(vocab_file))


def tiny_model(head: str = "mean", seed: int = 0) -> torch.nn.Module:
    """A random BERT with our label layout, as `build_model` would make it for `head`."""
    torch.manual_seed(seed)
    config = BertConfig(**TINY_CONFIG, **_label_kwargs())
    if head == "mean":
        return BertMeanPoolForMultiLabel(config).eval()
    if head == "cls":
        return BertForSequenceClassification(config).eval()
    raise ValueError(f"head={head!r}: expected 'mean' or 'cls'")


def tiny_card(head: str = "mean", **overrides: Any) -> PolicyCard:
    """Thresholds 0.5, temperature calibration (T=2) per policy; any PolicyCard field can be overridden."""
    policies = [
        PolicySpec(
            name=p,
            description=DESCRIPTIONS[p],
            threshold=0.5,
            threshold_method="tiny test default",
            calibration=Calibration(method="temperature", temperature=TINY_TEMPERATURE),
        )
        for p in POLICIES
    ]
    fields: dict[str, Any] = dict(
        policies=policies, max_length=TINY_MAX_LENGTH, head=head, backbone="tiny-random-bert", model_name="tiny"
    )
    fields.update(overrides)
    return PolicyCard(**fields)


def make_tiny_artifact(path: str | Path, head: str = "mean", *, seed: int = 0, **card_overrides: Any) -> Path:
    """Write a complete tiny model artifact to `path` (created) and return it."""
    path = Path(path)
    tokenizer = tiny_tokenizer(path.parent / f".{path.name}-vocab")
    return save_artifact(path, tiny_model(head, seed), tokenizer, tiny_card(head, **card_overrides))


def make_tiny_backbone(path: str | Path, seed: int = 0) -> Path:
    """A tiny random BERT *encoder* dir (config + weights + tokenizer), usable as `model.backbone` for training.

    It has no classifier head, like the bundled MiniLM: `serving.modeling.build_model` adds one.
    """
    from transformers import BertModel

    path = Path(path)
    torch.manual_seed(seed)
    BertModel(BertConfig(**TINY_CONFIG)).save_pretrained(path)
    tiny_tokenizer(path.parent / f".{path.name}-vocab").save_pretrained(path)
    return path


def make_tiny_sources(root: str | Path, n_train: int = 240, seed: int = 0) -> Path:
    """Two tiny TSV sources under `root` plus their `datasets.yaml`; returns the sources file.

    `tiny_full` labels all three policies from the words in the text; `tiny_violence` labels only violence
    (abusive and harassment unknown), as real sources do. Use with data.root=<root>,
    data.sources_file=<returned path>, so training reads them through the real `training.data.prepare`.
    """
    import random

    import yaml

    root = Path(root)
    rng = random.Random(seed)
    insults, threats = {"stupid", "idiot", "ugly"}, {"kill", "hurt", "die"}
    pool = [w for w in WORDS if w != "@user"]

    def tweet(i: int) -> tuple[str, int, int, int]:
        words = rng.choices(pool, k=rng.randint(3, 12)) + [f"n{i}"]  # the number keeps texts distinct
        if rng.random() < 0.4:
            words.insert(0, "@user")
        a, v = int(bool(insults & set(words))), int(bool(threats & set(words)))
        return " ".join(words), a, int(a and words[0] == "@user"), v

    sizes = {"train": n_train, "validation": n_train // 4, "test": n_train // 4}
    specs, i = [], 0
    for name, policies in (("tiny_full", ("abusive", "harassment", "violence")), ("tiny_violence", ("violence",))):
        (root / name).mkdir(parents=True, exist_ok=True)
        files = []
        for split, n in sizes.items():
            rows = ["id\ttext\ta\th\tv"]
            for _ in range(n if name == "tiny_full" else n // 2):
                i += 1
                text, a, h, v = tweet(i)
                rows.append(f"{i}\t{text}\t{a}\t{h}\t{v}")
            (root / name / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            files.append({"path": f"{split}.tsv", "split": split, "subset": split})
        column = {"abusive": "a", "harassment": "h", "violence": "v"}
        specs.append({
            "name": name, "description": "generated tiny tweets", "license": "CC0-1.0", "reader": "table",
            "quoting": "none", "id_column": "id", "text_column": "text", "files": files,
            "policies": {p: {"columns": [column[p]], "positive": ["1"], "negative": ["0"]} for p in policies},
        })
    sources_file = root / "datasets.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": specs}, sort_keys=False), encoding="utf-8")
    return sources_file


def write_tiny_train_config(folder: str | Path, name: str = "tiny.yaml", **train: Any) -> Path:
    """A training config for the tiny backbone on the tiny sources (both written into `folder` once).

    `train` entries override the `train:` section; everything stays inside `folder` (runs, data cache).
    """
    import yaml

    folder = Path(folder)
    if not (folder / "data" / "datasets.yaml").is_file():
        make_tiny_sources(folder / "data")
    if not (folder / "backbone" / "config.json").is_file():
        make_tiny_backbone(folder / "backbone")
    raw = {
        "data": {"root": str(folder / "data"), "sources_file": str(folder / "data" / "datasets.yaml"),
                 "cache_dir": str(folder / "cache")},
        "model": {"backbone": str(folder / "backbone"), "max_length": TINY_MAX_LENGTH, "head": "mean"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "warmup_ratio": 0.1, "num_threads": 1,
                  "system_metrics": False, "output_dir": str(folder / "runs"), **train},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
