"""Commands around the four services: the console entry point, the demo supervisor, backtest,
download, reset and watch. A tool may import any service and library; nothing imports a tool."""
