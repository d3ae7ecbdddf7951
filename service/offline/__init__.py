"""Offline tools over the same worker cycle as the service: the replay (``replay``, ``http_replay`` over a running
service), backtests (``backtest``), data sets and scenarios (``datasets``, ``scenarios``), a live server for tests and
benchmarks (``liveserver``), loopback test doubles (``testing/``) and the demo (``demo/``)."""

RETRAIN_LAG = 1  # graph runs from a retrain's start to its publication (service.runtime.cycle: fits within the wait)
