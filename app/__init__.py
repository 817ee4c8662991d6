"""The application, the top layer: the CLI (``cli.py``) and the run's lifecycle (``lifecycle.py``: checkpoints,
resume, interrupts, predictions). It may import every other package; none of them imports it (the layers
contract in ``pyproject.toml``, checked by ``tests/test_architecture.py``).
"""
