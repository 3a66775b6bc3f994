"""Market data from outside Bandwagon, shared by ingest, `bandwagon download` and the backtest:
exchanges through CCXT, and klines or trades files.

The only place CCXT is imported: clients, symbols and market terms (`markets`), candles, trades
and `fetch_ohlcv` paging (`candles`), and waits after failed calls (`backoff`); and the one
reader of market files, each row checked by SPEC 5.1 rule 11 (`market_files`). Code here may talk
to exchanges over the network and read files, but never Redis, and imports nothing from
`services` or `tools`: what ingest writes to market streams stays in `services/ingest`.
"""
