"""The record: everything written for TensorBoard, and the callbacks that compute it.

``tensorboardx.py`` TensorBoardXLogger (the only code importing tensorboardX); ``record.py`` images, text,
histograms, PR curves, embeddings and graphs through any TensorBoard-like logger; ``gradients.py``
GradNormMonitor; ``histograms.py`` on-device histogram summaries; ``health.py`` alert rules and
NonFiniteGuard; ``visuals.py`` ValidationVisuals (and a model's ``sample_grid``); ``run_config.py`` the run's
``config.yaml`` and HPARAMS.

May import ``common`` and libraries; never ``app``, ``modules`` or ``datamodules``.
"""

from loggers.tensorboardx import TensorBoardXLogger

__all__ = ["TensorBoardXLogger"]
