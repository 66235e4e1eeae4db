"""Sources of bytes for ingest jobs."""

from tasks.sources.base import Opened, Source, Stream

__all__ = ["Opened", "Source", "Stream"]
