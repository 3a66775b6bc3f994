"""Exchanges through CCXT, shared by ingest and `bandwagon download`.

The only place CCXT is imported: clients, symbols and market terms (`markets`), candles, trades
and `fetch_ohlcv` paging (`candles`), and waits after failed calls (`backoff`). Code here may talk
to exchanges over the network, but never to Redis, and imports nothing from `services`: what
ingest writes to market streams stays in `services/ingest`.
"""
