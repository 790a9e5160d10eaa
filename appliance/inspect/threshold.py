"""``threshold`` state, with Suricata's semantics.

- ``limit``: alert on the first ``count`` matches in each ``seconds`` window;
- ``threshold``: alert on every ``count``-th match within the window;
- ``both``: alert once per window, when the ``count``-th match arrives;
- ``detection_filter``: alert on every match after the ``count``-th in the window.

Windows start at the first match of a tracked address. State is bounded: past ``max_entries``
tracked (rule, address) pairs, the oldest are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict

from appliance.inspect.rules import Threshold


class ThresholdState:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, bytes], list[float]] = OrderedDict()

    def allow(self, sid: int, threshold: Threshold, src: bytes, dst: bytes, ts: float) -> bool:
        """Whether a match of rule ``sid`` at ``ts`` raises an alert."""
        key = (sid, src if threshold.track == "by_src" else dst)
        entry = self._entries.get(key)
        if entry is None or ts - entry[0] >= threshold.seconds or ts < entry[0]:
            entry = [ts, 0.0]
            self._entries[key] = entry
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        entry[1] += 1
        seen = int(entry[1])
        kind = threshold.type
        if kind == "detection_filter":
            return seen > threshold.count
        if kind == "limit":
            return seen <= threshold.count
        if kind == "threshold":
            if seen >= threshold.count:
                entry[1] = 0.0
                return True
            return False
        return seen == threshold.count  # both
