"""The guards of a load (SPEC §5): a load is refused, and the old list keeps serving, when
rejects pass a ratio, the input is empty or badly formed, or the list would shrink too much."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anning.errors import Refused
from anning.load.report import LoadReport

if TYPE_CHECKING:
    from anning.load.parse import LoadOptions

__all__ = ["Refusal", "SnapshotRefused", "check_rejects", "check_shrink"]


class SnapshotRefused(Refused):
    """A load refused by a guard; `report` says what was read and why it was refused."""

    def __init__(self, report: LoadReport) -> None:
        super().__init__(report.refused)
        self.report = report


class Refusal(Exception):
    """Raised inside a parse to refuse the load; becomes SnapshotRefused with the report."""




def check_rejects(report: LoadReport, max_reject_ratio: float) -> None:
    """The reject-ratio and empty-input guards, once every row was read."""
    if report.rows == 0:
        report.refused = "empty input: no data rows"
    elif report.rejected > max_reject_ratio * report.rows:
        report.refused = (
            f"{report.rejected:,} of {report.rows:,} rows rejected "
            f"({report.rejected / report.rows:.4%}), more than the limit "
            f"{max_reject_ratio:.4%}"
        )
    if report.refused:
        raise SnapshotRefused(report)


def check_shrink(report: LoadReport, entries_before: int | None, options: LoadOptions) -> None:
    """The shrink guard: refuse a list that lost more than the limit, unless allowed."""
    report.entries_before = entries_before
    if entries_before and report.entries_after is not None and not options.allow_shrink:
        floor = entries_before * (1 - options.max_shrink)
        if report.entries_after < floor:
            report.refused = (
                f"the list would shrink from {entries_before:,} to {report.entries_after:,} "
                f"entries ({1 - report.entries_after / entries_before:.1%}), more than the "
                f"limit {options.max_shrink:.0%} (--allow-shrink to force)"
            )
            raise SnapshotRefused(report)


