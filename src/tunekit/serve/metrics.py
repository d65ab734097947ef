"""Serving metrics in Prometheus' text format (GET /metrics), kept in process memory.

    metrics = Metrics(engine)            # registers itself for every finished generation
    metrics.refused("busy")              # a request turned away before it was queued
    text = metrics.render()

Counted: requests by outcome (ok | error | cancelled | busy | ...), prompt and completion
tokens, time to first token and inter-token latency histograms; read at scrape time: the
waiting queue and the running sequences.
"""

from __future__ import annotations

import bisect
import threading

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return out + [f"{name}_sum {self.total}", f"{name}_count {running}"]


class Metrics:
    def __init__(self, engine):
        self.engine = engine
        self.requests: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self._lock = threading.Lock()
        engine.finished_hooks.append(self.finished)

    def refused(self, outcome: str) -> None:
        with self._lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def finished(self, generation) -> None:
        """One generation ended (called by the engine): its outcome, tokens and latencies."""
        outcome = "error" if generation.reply is None else "cancelled" if generation.cancelled else "ok"
        times = generation.token_times
        with self._lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1
            if generation.reply is not None:
                self.prompt_tokens += generation.reply.prompt_tokens
                self.completion_tokens += generation.reply.completion_tokens
            if times:
                self.ttft.observe(times[0] - generation.created)
            for before, after in zip(times, times[1:]):
                self.itl.observe(after - before)

    def render(self) -> str:
        scheduler = getattr(self.engine, "scheduler", None)
        with self._lock:
            lines = ["# TYPE tunekit_requests_total counter",
                     *(f'tunekit_requests_total{{outcome="{k}"}} {v}' for k, v in sorted(self.requests.items())),
                     "# TYPE tunekit_prompt_tokens_total counter", f"tunekit_prompt_tokens_total {self.prompt_tokens}",
                     "# TYPE tunekit_completion_tokens_total counter",
                     f"tunekit_completion_tokens_total {self.completion_tokens}",
                     "# TYPE tunekit_queue_depth gauge", f"tunekit_queue_depth {scheduler.queued if scheduler else 0}",
                     "# TYPE tunekit_running_sequences gauge",
                     f"tunekit_running_sequences {scheduler.running if scheduler else 0}",
                     "# TYPE tunekit_time_to_first_token_seconds histogram",
                     *self.ttft.lines("tunekit_time_to_first_token_seconds"),
                     "# TYPE tunekit_inter_token_latency_seconds histogram",
                     *self.itl.lines("tunekit_inter_token_latency_seconds")]
        return "\n".join(lines) + "\n"
