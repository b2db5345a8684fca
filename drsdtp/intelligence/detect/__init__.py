"""Model-free online detection for any numeric field (see :mod:`.detector`)."""

from drsdtp.intelligence.detect.detector import TESTS, DetectorConfig, Findings, ScoreBatch, StreamDetector
from drsdtp.intelligence.detect.tail import TailModel

__all__ = ["TESTS", "DetectorConfig", "Findings", "ScoreBatch", "StreamDetector", "TailModel"]
