"""Binance Vision, the S3 bucket: where files live (layout), how a listing page reads (listing),
and how pages are fetched with retries (client)."""
