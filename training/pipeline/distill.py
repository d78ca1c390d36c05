"""`tweetguard distill`: train a student from a registered teacher (training.fit.distill) with `tweetguard train`'s
run (training.fit.command) and finish it like a trained model (training.registry.finish), registered under
`distill.registered_model` (the fast tier): @challenger there, tagged with its teacher, never @champion.
"""

from __future__ import annotations

from functools import partial

from training.config import Config, ConfigError
from training.fit.command import TrainResult, fit_transformer
from training.fit.device import resolve_accel
from training.fit.distill import Distiller
from training.fit.distributed import init_world, local_rank
from training.registry.finish import Registration, finish_training
from training.tracking.runs import check_reachable, resolve_uri


def registration(distiller: Distiller) -> Registration:
    """Where the student goes: its own registered model (the card's model_name too), never @champion."""
    name = distiller.cfg.distill.registered_model
    return Registration(name=name, champion=False, tags=distiller.tags(), model_name=name)


def distill(cfg: Config, *, config_file: str | None = None, resume: bool = False,
            progress_bar: bool = True) -> tuple[TrainResult, Distiller]:
    """Resolve the teacher, build the student, train it with `tweetguard train`'s loop, register it."""
    if cfg.model.kind != "transformer":
        raise ConfigError(f"model.kind={cfg.model.kind}: distillation trains a transformer student")
    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)  # before the teacher is fetched
    distiller = Distiller.resolve(cfg, uri)
    accel = resolve_accel(distiller.cfg.train, local_rank())
    world = init_world(accel.backend)
    try:
        result = fit_transformer(distiller.cfg, world, config_file, resume, progress_bar and world.main,
                                 accel=accel, distiller=distiller,
                                 finish=partial(finish_training, registration=registration(distiller)))
    finally:
        world.shutdown()
    return result, distiller
