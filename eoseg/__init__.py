"""eoseg: land-cover mapping from satellite imagery at national scale."""

__version__ = "0.1.0"
