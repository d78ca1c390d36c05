"""The student of `tweetguard distill` (the command: training.pipeline.distill): a fast tier, a student with fewer
encoder layers distilled from a registered teacher.

    tweetguard distill --teacher models:/tweetguard@champion [--config configs/default.yaml] [key=value ...]

The student is the teacher with `distill.layers` of its encoder layers: embeddings, the chosen layers and the head
are copied (`student_from_teacher`), the config says `num_hidden_layers = len(layers)`, and it is saved in the same
artifact format, so the Predictor, the ONNX fast path and the Hugging Face auto classes load it unchanged. The
teacher's tokenizer is the student's.

Training is `tweetguard train`'s loop (training.fit.command, training.fit.loop): the same data, epoch plan,
checkpoints (`--resume`), validation and finish (training.registry.finish: calibration, thresholds and tiers on
validation, card, MLflow Model). Only the loss gains a term: the teacher's raw logits for every train row (`TeacherTargets`), scored once
before training and cached on disk. The student is registered under `distill.registered_model` (tweetguard-fast),
@challenger there, tagged with its teacher; it never gets or moves any @champion (`tweetguard promote` refuses it).
"""

from __future__ import annotations

import copy
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.modeling import ENCODER_LAYER
from training.config import Config, ConfigError
from training.fit.batches import Encoded, TeacherTargets
from training.fit.device import Accel
from training.fit.validation import predict_logits
from training.tracking.versions import TEACHER_REF_TAG, TEACHER_VERSION_TAG

KIND = "distill"
TEACHER_CACHE_DIR = "teacher-logits"  # under train.output_dir


def evenly_spaced(n_layers: int, n: int) -> list[int]:
    """n of `n_layers` layer indices, evenly spaced with the first and the last among them (n = 1: the first).

    6 -> 3 gives [0, 2, 5]; 12 -> 6 gives [0, 2, 4, 7, 9, 11], the layers Hugging Face's DistilBERT initialisation
    takes from BERT-base. Keeping the last layer keeps the representation the teacher's head was fit on; keeping the
    first keeps the one its embeddings feed.
    """
    if not 1 <= n <= n_layers:
        raise ConfigError(f"distill.layers={n}: the teacher has {n_layers} encoder layers; choose 1..{n_layers}")
    return [0] if n == 1 else [round(i * (n_layers - 1) / (n - 1)) for i in range(n)]


def resolve_layers(spec: int | list[int], n_layers: int) -> list[int]:
    """`distill.layers` (a count or explicit indices) for a teacher of `n_layers` encoder layers."""
    if isinstance(spec, int):
        return evenly_spaced(n_layers, spec)
    if spec[-1] >= n_layers:
        raise ConfigError(f"distill.layers={spec}: the teacher has encoder layers 0..{n_layers - 1}")
    return list(spec)


def student_from_teacher(teacher, layers: list[int]):
    """A copy of `teacher` (a BERT-family classifier, either head) keeping only encoder `layers`: student layer j is
    teacher layer layers[j]; embeddings, pooler and head are the teacher's. Same class, config with
    num_hidden_layers = len(layers); every student parameter comes from the teacher (strict load)."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    theirs = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        m = ENCODER_LAYER.search(key)
        source = key if m is None else f"{key[:m.start(1)]}{layers[int(m[1])]}{key[m.end(1):]}"
        state[key] = theirs[source].detach().clone()
    student.load_state_dict(state, strict=True)
    return student


def weights_sha256(model_dir: Path) -> str:
    """One hash of the files that decide a model's logits (config and weights; not the card)."""
    from serving.artifact import file_sha256

    files = sorted(p for p in model_dir.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return h.hexdigest()


def inputs_sha256(teacher_sha: str, data: Encoded) -> str:
    """Cache key of the teacher logits: the teacher's weights and the exact token ids scored (so the dataset, its
    augmentation, the tokenizer and max_length are all in it)."""
    h = hashlib.sha256(teacher_sha.encode())
    h.update(np.asarray([len(x) for x in data.input_ids], dtype=np.int64).tobytes())
    h.update(np.fromiter((t for x in data.input_ids for t in x), dtype=np.int64).tobytes())
    return h.hexdigest()


def cached_teacher_logits(teacher, data: Encoded, cache_dir: Path, teacher_sha: str, *, batch_size: int,
                          pad_id: int, accel: Accel, progress: bool = True) -> tuple[np.ndarray, Path, bool]:
    """(logits [N, P] float32, cache file, whether it came from the cache): the teacher's raw logits for every row
    of `data`, scored once (eval mode, length-sorted batches) and kept under `cache_dir`."""
    path = Path(cache_dir) / f"{inputs_sha256(teacher_sha, data)[:32]}.npy"
    if path.is_file():
        return np.load(path), path, True
    logits = predict_logits(teacher, data, batch_size, pad_id, accel, progress="teacher logits" if progress else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, logits)
    tmp.replace(path)  # a reader sees the whole file or none
    return logits, path, False


@dataclass
class Distiller:
    """What `tweetguard train`'s run needs to distill instead (training.fit.command.fit_transformer's hook)."""

    cfg: Config
    teacher_dir: Path
    teacher_name: str | None
    teacher_version: str | None
    teacher_sha: str
    layers: list[int]
    cache_hit: bool | None = None  # set by targets(): whether the teacher logits came from the cache
    _teacher: object = field(default=None, repr=False)

    @classmethod
    def resolve(cls, cfg: Config, uri: str) -> Distiller:
        from serving.artifact import read_card
        from serving.predictor import read_model_config
        from training.tracking.refs import resolve_model_ref
        from training.tracking.versions import identify

        ref = cfg.distill.teacher
        teacher_dir = resolve_model_ref(ref, tracking_uri=uri)
        card = read_card(teacher_dir)
        if not (teacher_dir / "config.json").is_file():
            raise ConfigError(f"distill.teacher={ref}: not a transformer model (no config.json; the TF-IDF baseline "
                              "cannot teach layers)")
        identity = identify(ref, uri, card.mlflow_run_id)
        layers = resolve_layers(cfg.distill.layers, read_model_config(teacher_dir).num_hidden_layers)
        # The student is the teacher's architecture: its backbone and head are facts of the teacher, said in the
        # student's config and card.
        student_cfg = cfg.model_copy(deep=True)
        if (cfg.model.backbone, cfg.model.head) != (card.backbone, card.head):
            print(f"distill: model.backbone={card.backbone!r} and model.head={card.head!r} come from the teacher",
                  file=sys.stderr)
        student_cfg.model.backbone, student_cfg.model.head = card.backbone, card.head
        return cls(student_cfg, teacher_dir, identity.name, identity.version, weights_sha256(teacher_dir), layers)

    # -- the model -------------------------------------------------------------------------------------------
    def tokenizer(self):
        from transformers import AutoTokenizer

        from serving.predictor import read_model_config

        return AutoTokenizer.from_pretrained(self.teacher_dir, config=read_model_config(self.teacher_dir))

    def student(self):
        """The student at initialisation (training mode); the teacher stays loaded until `targets`."""
        from serving.modeling import load_model

        self._teacher = load_model(self.teacher_dir)
        return student_from_teacher(self._teacher, self.layers).train()

    def targets(self, train: Encoded, pad_id: int, accel: Accel, progress: bool) -> TeacherTargets:
        """The teacher's logits for every train row (cached), then the teacher is released."""
        cache = Path(self.cfg.train.output_dir) / TEACHER_CACHE_DIR
        self._teacher.to(accel.device)
        logits, path, self.cache_hit = cached_teacher_logits(
            self._teacher, train, cache, self.teacher_sha, batch_size=self.cfg.train.eval_batch_size, pad_id=pad_id,
            accel=accel, progress=progress)
        print(f"teacher logits: {path} ({'cached' if self.cache_hit else 'scored'}, {len(logits)} rows)",
              file=sys.stderr)
        self._teacher = None
        return TeacherTargets(logits, self.cfg.distill.alpha, self.cfg.distill.temperature)

    # -- tracking (training.pipeline.distill registers the student with these tags) ---------------------------
    def tags(self) -> dict[str, str]:
        tags = {"kind": KIND, TEACHER_REF_TAG: self.cfg.distill.teacher, "teacher.sha256": self.teacher_sha}
        if self.teacher_name:
            tags.update({"teacher.name": self.teacher_name, TEACHER_VERSION_TAG: str(self.teacher_version)})
        return tags

    def params(self) -> dict[str, object]:
        return {"derived.student_layers": self.layers, "derived.teacher_version": self.teacher_version or "none",
                "derived.teacher_sha256": self.teacher_sha}

    def check_resume(self, state: dict) -> None:
        saved = state.get("teacher_sha256")
        if saved != self.teacher_sha:
            raise ConfigError(f"--resume: the checkpointed run distilled a teacher with weights {str(saved)[:12]}..., "
                              f"distill.teacher={self.cfg.distill.teacher} now has {self.teacher_sha[:12]}... (did "
                              "its alias move?); pass that run's teacher version, or start a new run")
