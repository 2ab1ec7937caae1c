"""The volume dataset: daily kline figures per symbol from Binance Vision's 1d kline files."""
