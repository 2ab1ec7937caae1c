"""vision-availability: which Binance futures had a daily file on Binance Vision, day by day."""
