"""tracekit: GPU profiler traces of LLM inference in, attributed events table out.

>>> from tracekit.ingest import ingest  # doctest: +SKIP
"""

__version__ = "0.1.0"
