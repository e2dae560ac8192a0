"""The types of request fields: strict, and lists that stop at their first bad item.

Strict: `true` is no token id, `"8"` no number of dimensions, `1` no flag; JSON's own types only
(a whole float such as 8.0 still passes as an int, as JSON does not tell them apart).

Fail-fast lists: pydantic reports every bad item of a list by default, and tries each member of a
union in turn, so a 4 MiB array of a million wrong items built a million errors on the event loop
(~1 s). These lists stop at the first bad item, and the unions are tried left to right.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

Flag = StrictBool
Text = StrictStr
Count = StrictInt
Number = StrictFloat | StrictInt
Texts = Annotated[list[StrictStr], Field(fail_fast=True)]
TokenIds = Annotated[list[StrictInt], Field(fail_fast=True)]
TokenIdLists = Annotated[list[TokenIds], Field(fail_fast=True)]
Pairs = Annotated[list[tuple[StrictStr, StrictStr]], Field(fail_fast=True)]
TextOrTexts = Annotated[StrictStr | Texts, Field(union_mode="left_to_right")]
