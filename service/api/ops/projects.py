"""Projects and the policy text clients send (a JSON object or YAML)."""

from __future__ import annotations

from typing import Any

import yaml

from policies import InputError, Policy, PolicyError, parse_policy
from service.api.ops import tell
from service.api.schemas.projects import ProjectDetail
from service.runtime.feedback import FeedbackSink
from service.settings import Settings, tool_environment
from service.store import SqlStore
from service.store.tables import ProjectPublic
from tools.outbound import check_policy_endpoints


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` references let a few hundred bytes expand into billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a policy; write the "
                                              "value out", event.start_mark)
        return super().compose_node(parent, index)


def policy_from_input(raw: dict[str, Any] | str, *, project: str, settings: Settings) -> tuple[Policy, int | None]:
    """Validate a client's policy (mapping or YAML text) for ``project``; returns it and the version it asked for.
    A tool endpoint the deployment (``settings``) does not allow is a PolicyError (422).
    ``project`` defaults to the project's name and ``version`` to 1 (callers assign the real one)."""
    if isinstance(raw, str):
        try:
            raw = yaml.load(raw, Loader=_NoAliasLoader)  # a SafeLoader without aliases
        except yaml.YAMLError as exc:
            raise PolicyError(f"policy: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"policy: expected a mapping of fields, got {type(raw).__name__}")
    data = dict(raw)
    data.setdefault("project", project)
    requested = data.get("version")
    policy = parse_policy({**data, "version": 1 if requested is None else requested})
    check_policy_endpoints(policy, tool_environment(settings).endpoints())  # 422 before any tool is built
    return policy, requested


def create_project(*, store: SqlStore, feedback: FeedbackSink, name: str, policy: dict[str, Any] | str, actor: str
                   ) -> ProjectPublic:
    first, requested = policy_from_input(policy, project=name, settings=store.settings)
    if requested is not None and requested != 1:
        raise InputError(f"policy.version: the first version of a project is 1; omit version or send 1 "
                         f"(got {requested})")
    created = store.projects.create_project(name, first, actor=actor)
    tell(feedback, name)
    return created


def list_projects(*, store: SqlStore) -> list[ProjectPublic]:
    return store.projects.list_projects()


def get_project(*, store: SqlStore, project: str) -> ProjectDetail:
    info = store.projects.get_project(project)
    labels = store.projects.active_policy(project).labels if info.active_version is not None else []
    versions = len(store.projects.list_policy_versions(project))
    return ProjectDetail(**info.model_dump(), labels=list(labels), policy_versions=versions)
