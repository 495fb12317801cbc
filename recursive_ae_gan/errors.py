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


def user_error(err: BaseException | None) -> UserError | None:
    """The UserError behind ``err``, if any (Hydra's instantiate wraps what constructors raise)."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): enough for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
