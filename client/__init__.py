"""Python client (sync and asyncio) for the lmrec gateway, and the text formatting the CLI uses."""

from .client import AsyncRecommenderClient, ClientError, RecommenderClient, format_items, format_status

__all__ = ["AsyncRecommenderClient", "ClientError", "RecommenderClient", "format_items", "format_status"]
