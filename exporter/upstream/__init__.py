"""What every provider's client shares: one budgeted, retrying JSON-over-HTTPS reader.

A provider package describes its endpoints and response models; this package sends the
requests (bearer key, request budget, retries with backoff, ``Retry-After``, capped bodies)
and turns every failure into an ``ApiError`` the core understands without knowing HTTP.
"""
