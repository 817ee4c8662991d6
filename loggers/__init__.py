"""The tensorboardX-backed Lightning logger and the callbacks that feed it."""

from loggers.tensorboardx import TensorBoardXLogger

__all__ = ["TensorBoardXLogger"]
