"""One error type for bad input: it names the input and the problem, and the CLI prints it on one line."""


class PosestreamError(Exception):
    """A user-facing error about one input (a file, a URL, a model, a config value)."""

    def __init__(self, subject: str, problem: str):
        super().__init__(f"{subject}: {problem}")
        self.subject = subject
        self.problem = problem
