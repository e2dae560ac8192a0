"""One request base for every route that takes texts: OpenAI names the field `input`, TEI `inputs`,
and a body copied from one route to another under the same /v1/ prefix should still work.

A route declares the name its API family uses; the other name is accepted as the same field, and a
body with both is refused (422), since which one was meant cannot be known.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator

NAMES = ("input", "inputs")


class TextsRequest(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _either_input_or_inputs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic itself reports a body that is not an object
        given = [name for name in NAMES if name in data]
        if len(given) == 2:
            raise ValueError("the texts came as both `input` and `inputs`; send only one of them")
        declared = next(name for name in NAMES if name in cls.model_fields)
        if given and given[0] != declared:
            data = {**data, declared: data[given[0]]}
            del data[given[0]]
        return data
