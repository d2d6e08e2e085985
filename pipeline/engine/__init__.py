"""The pure metric engine: conversations, windows, sketches, sentiment, watermark. No I/O."""

from pipeline.engine.engine import Batch, Engine, EngineStats
from pipeline.engine.windows import WindowRow

__all__ = ["Batch", "Engine", "EngineStats", "WindowRow"]
