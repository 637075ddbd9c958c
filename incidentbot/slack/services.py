"""The services the Slack listeners hand work to, in one bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from incidentbot.jobs.queue import JobAdmin
from incidentbot.slack.alerts import AlertWorkflows
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.gateway import SlackGateway
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import IncidentWorkflows


@dataclass(frozen=True)
class Services:
    declaring: IncidentWorkflows
    running: ResponseWorkflows
    closing: ClosingWorkflows
    paging: PagingWorkflows
    alerts: AlertWorkflows
    jobs: JobAdmin

    @property
    def gateway(self) -> SlackGateway:
        return self.declaring.gateway

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.declaring.clock
