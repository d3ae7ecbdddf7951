"""The project's exception tree, shallow on purpose.

Every error labelagent raises on purpose derives from :class:`LabelAgentError`; the
service maps each subclass to one HTTP status in a single handler, so the messages
here are stable and tests assert them.
"""

from __future__ import annotations


class LabelAgentError(Exception):
    """Base of every error labelagent raises on purpose."""


class PolicyError(LabelAgentError):
    """A policy is invalid, unknown or cannot be used as asked."""


class ToolError(LabelAgentError):
    """A tool failed to produce votes for a batch."""


class AgentError(LabelAgentError):
    """The agent could not run a batch."""


class NotFoundError(LabelAgentError):
    """An object does not exist (or is not visible to the caller)."""


class ConflictError(LabelAgentError):
    """The request conflicts with the current state (stale lease, duplicate key, ...)."""


class InputError(LabelAgentError):
    """The caller sent something that cannot be processed; the message says what to fix."""


class AuthenticationError(LabelAgentError):
    """The request carries no API key, or one that is unknown or revoked."""


class PermissionDeniedError(LabelAgentError):
    """The API key is valid but its role may not do this."""


class RateLimitedError(LabelAgentError):
    """The API key sent more requests than its rate allows; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
