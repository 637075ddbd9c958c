"""Domain errors: each carries a message fit to show the person who asked."""


class IncidentError(Exception):
    """A request the domain refuses; `str(error)` is the user-facing explanation."""


class NotAnIncidentChannel(IncidentError):
    """The command needs an incident channel and was used elsewhere."""


class InvalidTransition(IncidentError):
    """A status or severity change that the lifecycle does not allow."""
