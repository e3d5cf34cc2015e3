from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every params section: unknown keys are refused, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
