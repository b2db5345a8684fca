"""The ingest pipeline: validation, mapping, deadband, buffering, one core call per batch (see pipeline)."""

from drsdtp.ingest.options import FieldRule, IngestOptions
from drsdtp.ingest.pipeline import Pipeline, PipelineStats
from drsdtp.ingest.runner import AdapterRunner, IngestService, IngestSnapshot

__all__ = [
    "AdapterRunner",
    "FieldRule",
    "IngestOptions",
    "IngestService",
    "IngestSnapshot",
    "Pipeline",
    "PipelineStats",
]
