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
