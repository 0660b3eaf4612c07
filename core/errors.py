"""The one error type users see: it names the input at fault and says what to do."""


class InputError(ValueError):
    """Bad user input. ``str()`` reads: "<input>: <problem>. <fix>"."""

    def __init__(self, input_name: str, problem: str, fix: str = ""):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        message = f"{input_name}: {problem}"
        if fix:
            message += f" {fix}"
        super().__init__(message)


def closest(value, choices, cutoff: float = 0.6) -> str | None:
    """The choice nearest to a mistyped ``value`` (for "did you mean ...?" hints), or None."""
    import difflib

    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=cutoff)
    return near[0] if near else None
