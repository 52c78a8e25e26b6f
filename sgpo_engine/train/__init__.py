"""The SGPO trainer: config, rollouts, checkpoints, torchrun (the prompt
sources are the tasks', sgpo_engine.tasks, and re-exported here)."""
from ..tasks import ArithSource, Example, JsonlSource
from .config import TrainConfig, load as load_config
from .trainer import SGPOTrainer

__all__ = ["TrainConfig", "load_config", "ArithSource", "Example", "JsonlSource", "SGPOTrainer"]
