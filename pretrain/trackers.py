"""Optional experiment trackers for pretraining: Weights & Biases and TensorBoard.

Off by default (`logging.wandb=true`, `logging.tensorboard=true` switch them on); each package is
imported only when switched on, and only rank 0 logs. Install with `.venv/bin/pip install -e '.[tracking]'`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from core.config import ConfigError, to_dict


class Trackers:
    """Optional W&B / TensorBoard (off by default; imported only when switched on)."""

    @staticmethod
    def check_installed(cfg) -> None:
        """Before any work, on every rank: a missing package is a clear error, not a hang later."""
        for on, module in ((cfg.logging.wandb, "wandb"), (cfg.logging.tensorboard, "tensorboard")):
            if on and importlib.util.find_spec(module) is None:
                raise ConfigError(f"{module} is not installed (logging.{module}=true): "
                                  f".venv/bin/pip install -e '.[tracking]'")

    def __init__(self, cfg, run_path: Path, enabled: bool):
        self.wandb = self.tb = None
        if not enabled:
            return
        if cfg.logging.wandb:
            import wandb
            self.wandb = wandb.init(project=cfg.logging.wandb_project, name=run_path.name, config=to_dict(cfg),
                                    dir=str(run_path), resume="allow", id=run_path.name)
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_path / "tb"))

    def log(self, step: int, metrics: dict) -> None:
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()
