"""The SGPO trainer: config, prompt sources, rollouts, checkpoints, torchrun."""
from .config import TrainConfig, load as load_config
from .data import ArithSource, Example, JsonlSource
from .trainer import SGPOTrainer

__all__ = ["TrainConfig", "load_config", "ArithSource", "Example", "JsonlSource", "SGPOTrainer"]
