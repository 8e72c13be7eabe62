"""A base for models of what GitHub sends: liberal in what it accepts.

Unknown fields are ignored, and a null where the model has a default reads as that default
(GitHub, and GitHub Enterprise Server more so, drift from their own description). Only the
fields declared without a default are required.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_missing(cls, data: object) -> object:
        """A null where Trimo has a default reads as the default."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if value is not None or key not in fields or fields[key].is_required()
        }
