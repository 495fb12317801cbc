"""Errors a user can fix by changing an override: entry points print them as one line."""


class UserError(Exception):
    """Bad input or missing data; the message says which override fixes it."""


class RunFailed(UserError):
    """Training ran but its result is unusable; ``status`` goes into metrics.json."""

    status = "failed"


class DivergedError(RunFailed):
    """A training loss became non-finite: the run stops at that step."""

    status = "diverged"


class CollapsedRunError(RunFailed):
    """The trained network outputs (nearly) the same image for every input."""

    status = "collapsed"
