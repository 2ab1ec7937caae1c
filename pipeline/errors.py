"""The one exception type a stage turns into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """An error the operator can act on; its message is the whole story, on one line."""
