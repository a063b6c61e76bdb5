"""The preflight's field list, asked for while the input is read.

The plan needs the account's customFieldIds only to reject items whose field does not exist, and
the read, the conversion and the hashing of the first chunk come before that check: the
request's round trip (a network's latency, 60 ms of a 200,000-item run's start at 50 ms) now
overlaps them instead of preceding the whole plan (issue 22).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from polyv_connector.errors import RunAborted
from polyv_connector.sender import Circuit
from polyv_connector.transport.client import PolyvClient


class FieldListAhead:
    """Asks for the account's field list in a thread of its own; calling it waits for the
    answer and returns the customFieldIds.

    A refusal (:class:`RunAborted`: credentials, clock, an IP block, POLYV down) opens
    ``circuit`` when the answer is first waited for, as the preflight did before the plan: the
    plan goes on, nothing is sent, and every item is reported. Anything else the request raised
    is raised there. Waiting again returns the same answer.
    """

    def __init__(self, client: PolyvClient, sleep: Callable[[float], None], circuit: Circuit) -> None:
        self._circuit = circuit
        self._ids: set[str] | None = None
        self._abort: RunAborted | None = None
        self._error: BaseException | None = None
        # A daemon: a request stuck past its timeouts must not keep a stopped process alive.
        self._thread = threading.Thread(target=self._ask, args=(client, sleep), name="polyv-field-list", daemon=True)
        self._thread.start()

    def _ask(self, client: PolyvClient, sleep: Callable[[float], None]) -> None:
        try:
            self._ids = {
                f["customFieldId"]
                for f in client.list_fields(sleep=sleep)
                if isinstance(f, dict) and f.get("customFieldId")
            }
        except RunAborted as abort:
            self._abort = abort
        except BaseException as exc:  # raised where the answer is waited for
            self._error = exc

    def join(self) -> None:
        """Wait for the answer without acting on it (when the plan failed)."""
        self._thread.join()

    def __call__(self) -> set[str] | None:
        """The customFieldIds, or None if the list could not be read (the circuit is open)."""
        self._thread.join()
        abort, self._abort = self._abort, None
        if abort is not None:
            self._circuit.open(abort)
        if self._error is not None:
            raise self._error
        return self._ids
