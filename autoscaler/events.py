"""Events about compute environments (launches, terminations, lost pods, problems)."""

from __future__ import annotations

from collections.abc import Callable

from ebb import keys
from ebb.events import EventRecorder, ObjectRef
from ebb.model import ComputeEnvironment


class EnvironmentEvents:
    def __init__(
        self, recorder: EventRecorder, lookup: Callable[[str], ComputeEnvironment | None]
    ) -> None:
        self.recorder = recorder
        self._lookup = lookup  # a compute environment by name, from the cache

    def record(
        self, spec: ComputeEnvironment, reason: str, message: str, *, warning: bool = False
    ) -> None:
        ref = ObjectRef(keys.API_VERSION, "ComputeEnvironment", spec.name, uid=spec.uid)
        self.recorder.record(ref, reason, message, warning=warning)

    def about(self, name: str, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event on the environment named `name`, if it still exists."""
        spec = self._lookup(name)
        if spec is not None:
            self.record(spec, reason, message, warning=warning)
