from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training tests need PyTorch")

from us43d.training.sam import MissingDependency, sam_package  # noqa: E402

try:
    sam_package()
except MissingDependency as exc:  # pragma: no cover - depends on the machine
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic BUS-BRA corpus, built once for the training tests."""
    from helpers import build
    from us43d.demo import make_bus_bra_like

    root = tmp_path_factory.mktemp("demo")
    make_bus_bra_like(root / "raw" / "BUS-BRA", patients=20, seed=3)
    build(root / "raw", root / "corpus", ["BUS-BRA"])
    return root / "corpus"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained tiny weights: enough to run predict, eval or classify, no training needed."""
    from us43d.training.sam import build_model, model_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(build_model(model_config("tiny")).state_dict(), path)
    return path


def tiny_config(**changes):
    from us43d.training.train import TrainConfig

    settings = dict(
        model="tiny",
        iters=6,
        batch_size=2,
        workers=0,
        lr=1e-3,
        warmup_iters=2,
        milestones=(),
        checkpoint_every=3,
        log_every=1,
        init="none",
    )
    # one step per iteration and no validation unless a test asks: the tests stay fast
    settings.update(global_batch=None, val_every=0)
    settings.update(changes)
    return TrainConfig(**settings)
