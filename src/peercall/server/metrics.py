"""`GET /metrics`: Prometheus exposition of the hub's counters.

The hot path only bumps plain integers in dicts (`Hub.stats`); this collector turns them into metric families when
Prometheus scrapes, so that counting costs a dict update per frame instead of a labelled-metric lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..hub.router import Hub
    from .session import Sessions

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubCollector(Collector):
    def __init__(self, hub: Hub, sessions: Sessions) -> None:
        self.hub = hub
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        hub, stats = self.hub, self.hub.stats
        yield GaugeMetricFamily("peercall_connections", "Open signaling connections", value=len(hub))
        yield GaugeMetricFamily(
            "peercall_users_online", "Users with at least one connection (on any node)", value=hub.users_online()
        )
        active = GaugeMetricFamily("peercall_calls_active", "Calls not yet ended, by state", labels=["state"])
        for state, count in hub.calls_by_state().items():
            active.add_metric([state], count)
        yield active
        yield _counter(
            "peercall_messages", "Frames received from clients and accepted, by type", "type", stats.messages
        )
        if hub.broker.shared:
            yield _counter("peercall_redis_round_trips", "Round trips to Redis, by kind", "kind", hub.broker.ops)
            yield GaugeMetricFamily("peercall_redis_up", "1 if Redis answered lately", value=int(hub.broker.healthy))
            asks = getattr(hub.broker, "asks", None)  # (the Redis broker's: not part of the Broker interface)
            if asks is not None:
                yield _counter(
                    "peercall_owner_asks",
                    "Frames of connections here asked of the node that owns their call, by outcome",
                    "outcome",
                    asks,
                )
        if hub.push is not None:
            yield _counter("peercall_pushes", "Web Pushes, by what became of them", "result", hub.push.sent)
        yield _counter("peercall_errors", "Error frames sent to clients, by code", "code", stats.errors)
        yield _counter("peercall_calls", "Calls ended, by outcome", "outcome", stats.outcomes)
        yield _counter("peercall_disconnects", "Connections closed by the server, by reason", "reason", stats.dropped)
        yield CounterMetricFamily(
            "peercall_relayed_dropped",
            "Frames a call party sent that were dropped because the other party's connection lagged (relay buffer)",
            value=stats.relay_dropped,
        )
        yield CounterMetricFamily(
            "peercall_history_write_failures", "Call records that could not be written", value=hub.history_failures
        )
        if hub.webhooks is not None:
            yield _counter(
                "peercall_webhooks",
                "Webhook deliveries by result: delivered, retried (a failed attempt), gave-up, dropped (queue full)",
                "result",
                {result: hub.webhooks.counts[result] for result in ("delivered", "retried", "gave-up", "dropped")},
            )
            yield GaugeMetricFamily(
                "peercall_webhook_queue",
                "Webhook deliveries waiting on this node (in flight or for a retry)",
                value=hub.webhooks.pending(),
            )
        yield GaugeMetricFamily(
            "peercall_send_backlog_bytes",
            "Bytes waiting in send backlogs of slow readers",
            value=self.sessions.backlog_bytes(),
        )
        for name, help_text, histogram in (
            ("peercall_call_answer_seconds", "From call-request to call-accept", stats.answer_time),
        ):
            family = HistogramMetricFamily(name, help_text)
            family.add_metric([], histogram.buckets(), histogram.total)
            yield family


def _counter(name: str, help_text: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def registry_for(hub: Hub, sessions: Sessions) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub, sessions))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
