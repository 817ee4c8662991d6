"""The application, the top layer: the CLI (``cli.py``), the checks of config values Lightning would not turn
into a clean error (``config_checks.py``), the run's lifecycle (``lifecycle.py``: checkpoints, resume,
interrupts, predictions), the ``sweep`` subcommand (``sweep.py``, ``sweep_spec.py``: Optuna studies whose trials
are fits) and the ``report`` subcommand (``report.py``, ``report_html.py``, ``sweep_report.py``). It may import
every other package; none of them imports it (the layers contract in ``pyproject.toml``, checked by
``tests/test_architecture.py``).
"""
