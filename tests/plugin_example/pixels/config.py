"""The pixels kind's params section."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from genlab.config import CompileMode, ModelSection, PositiveFloat, PositiveInt, Precision


class PixelsConfig(ModelSection):
    conditional: bool = False  # one mean image per digit when true
    epochs: PositiveInt = 2
    batch_size: PositiveInt = 100
    lr: PositiveFloat = 0.05
    diagnostic_samples: Annotated[int, Field(ge=0)] = 100
    precision: Precision = "fp32"
    compile: CompileMode = "eager"


CONFIG = PixelsConfig
