"""wordcount in Python: the job of examples/README.md, made a component by
componentize-py (CPython inside the component). Build: ./build.sh <out-dir>.

componentize-py generates the `wit_world` package from wit/job.wit: the exported
interface `job` is a class named `Job` in this module; a `result<_, E>` is returned
by returning normally or by raising `Err(payload)`; variants are dataclasses
(`RunError_Stopped()`); enums are `Enum`s.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Backoff,
    Command,
    JobContext,
    JobInfo,
    Level,
    RunError_Cancelled,
    RunError_Failed,
    RunError_Stopped,
)

MAX_REPEAT = 1_000_000_000
# Words are maximal runs of characters other than space, tab, CR and LF.
WORD = re.compile(r"[^ \t\n\r]+")


def parse(text: str) -> tuple[str, int]:
    """The parameters (text, repeat), or ValueError naming the problem."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"parameters are not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise ValueError("parameters must be a JSON object")
    if "text" not in params:
        raise ValueError("missing parameter 'text'")
    if not isinstance(params["text"], str):
        raise ValueError("parameter 'text' must be a string")
    repeat = params.get("repeat")
    if repeat is None:
        repeat = 1
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(f"parameter 'repeat' must be an integer from 1 to {MAX_REPEAT}")
    return params["text"], repeat


class Job(exports.Job):
    def describe(self) -> JobInfo:
        return JobInfo(
            name="wordcount-py",
            description="counts the words of `text`, `repeat` times (Python)",
            capacity=[],
            backoff=Backoff(initial_backoff_ms=1000, max_backoff_ms=300_000),
            memory_mib=0,
        )

    def max_fails(self) -> int:
        return 0

    def should_retry(self, failure: str, attempt: int) -> bool:
        return True

    def validate(self, params: str) -> None:
        try:
            parse(params)
        except ValueError as e:
            raise Err(str(e))

    def run(self, ctx: JobContext, params: str) -> None:
        try:
            text, repeat = parse(params)
        except ValueError as e:
            raise Err(RunError_Failed(str(e)))
        step = max(1, repeat // 10)
        words = 0
        for n in range(1, repeat + 1):
            command = host.op_command()
            if command == Command.STOP:
                raise Err(RunError_Stopped())
            if command == Command.CANCEL:
                raise Err(RunError_Cancelled())
            words = len(WORD.findall(text))
            if n % step == 0 or n == repeat:
                host.checkin(f"{n}/{repeat}")
        host.log(Level.INFO, f"{words} words")
