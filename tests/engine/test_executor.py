"""The float executor's lifetime: a model that has run is freed with its last reference."""

from __future__ import annotations

import gc
import weakref

import numpy as np

import engine
from benchmarks.models import mlp_feeds, tiny_mlp
from engine.executor import executor_for
from engine.int8 import Int8Executor
from tests.engine.int8.helpers import minmax_plan


def test_a_model_that_ran_is_freed_without_a_garbage_collection() -> None:
    """executor_for caches the executor on the model; the executor must not point back (a
    cycle waits for a full collection, which the window runs rarely: replaced models' arrays
    stayed alive for tens of seconds)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        model = engine.model_from_proto(tiny_mlp())
        feeds = mlp_feeds(seed=1)
        out = executor_for(model).run(feeds)["y"]
        plan = minmax_plan(model, [mlp_feeds(seed=s) for s in range(2, 5)])
        Int8Executor(model, plan).run(feeds)
        alive = weakref.ref(model)
        weights = weakref.ref(executor_for(model))
        del model, plan
        assert alive() is None and weights() is None
        assert np.isfinite(out).all()
    finally:
        if was_enabled:
            gc.enable()


def test_an_executor_outlives_its_model() -> None:
    fe = executor_for(engine.model_from_proto(tiny_mlp()))  # the model itself is gone at once
    assert fe.run(mlp_feeds(seed=3))["y"].shape == (1, 4)
