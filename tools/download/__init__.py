"""`bandwagon download`: exchange klines history into the CSV that replay and backtest read."""
