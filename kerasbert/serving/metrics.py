"""TF Serving's request metrics, exported in Prometheus' text format.

`ServingMetrics` counts requests and times them under the names, labels and
buckets TF Serving gives them, and writes them as TF Serving's Prometheus
exporter does, with `prometheus-client` (on a `CollectorRegistry` of its
own, not the process-wide one):

- `:tensorflow:serving:request_count{model_name, status}`: every REST
  request under `/v1/` and every gRPC Predict, Classify and Regress, by
  status code name (`OK`, `NOT_FOUND`, ...);
- `:tensorflow:serving:request_latency{model_name, API, entrypoint}`: a
  histogram of the successful ones in microseconds, `entrypoint` `REST` or
  `GRPC`, `API` the REST verb (`predict`, ...; empty for GETs) or the gRPC
  method (`Predict`, ...).

TF Serving names its metrics like paths (`/tensorflow/serving/request_count`);
its exporter turns every character outside `[a-zA-Z0-9_]` into `:`.

Example:

>>> metrics = ServingMetrics()
>>> metrics.record("quickstart", "OK", "predict", "REST", 1234.0)
>>> print(metrics.prometheus_text())

Reference: TF Serving's `servables/tensorflow/util.cc` (the metrics),
`model_servers/http_server.cc` and `util/prometheus_exporter.cc`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from kerasbert.serving.text_protos import MonitoringConfig, read_text_proto_file

__all__ = [
    "DEFAULT_PROMETHEUS_PATH",
    "ServingMetrics",
    "prometheus_metric_name",
    "read_monitoring_config_file",
]

# PrometheusExporter::kPrometheusPath
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"

# monitoring::Buckets::Exponential(10, 1.8, 33): 10 * 1.8**i for i < 32, then +Inf.
LATENCY_BUCKETS = tuple(10 * 1.8**i for i in range(32))


def prometheus_metric_name(name: str) -> str:
    """A TF Serving metric's name as its Prometheus exporter writes it."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + name if name[:1].isdigit() else name


class _Collector:
    def __init__(self, metrics: "ServingMetrics"):
        self._metrics = metrics

    def collect(self):
        with self._metrics._lock:
            counts = dict(self._metrics._counts)
            latencies = {k: (list(b), s) for k, (b, s) in self._metrics._latencies.items()}
        # A family is written only once it has points, as TF Serving does.
        if counts:
            name = prometheus_metric_name(REQUEST_COUNT)
            # TF Serving types it `counter` but names its samples without the
            # `_total` that prometheus-client gives a counter's; untyped, the
            # family and its samples keep TF Serving's name, which queries use.
            family = Metric(name, "The total number of requests.", "unknown")
            for (model_name, status), value in sorted(counts.items()):
                family.add_sample(name, {"model_name": model_name, "status": status}, value)
            yield family
        if latencies:
            name = prometheus_metric_name(REQUEST_LATENCY)
            family = Metric(
                name,
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                "histogram",
            )
            for (model_name, api, entrypoint), (buckets, total) in sorted(latencies.items()):
                labels = {"model_name": model_name, "API": api, "entrypoint": entrypoint}
                cumulative = 0
                for limit, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
                    cumulative += count
                    le = "+Inf" if limit == float("inf") else _bucket_text(limit)
                    family.add_sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
                family.add_sample(f"{name}_sum", labels, total)
                family.add_sample(f"{name}_count", labels, cumulative)
            yield family


def _bucket_text(limit: float) -> str:
    # absl::StrCat of a double: up to 6 significant digits.
    return f"{limit:.6g}"


class ServingMetrics:
    """Request counts and latencies, by model and status, for both APIs.

    Thread-safe: REST and gRPC handlers record from any thread.

    Attributes:
        registry: the `prometheus_client.CollectorRegistry` they are in.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latencies: dict[tuple[str, str, str], tuple[list[int], float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def record(
        self, model_name: str, status: str, api: str, entrypoint: str, latency_micros: float
    ):
        """Counts one request; times it if it succeeded (`status` `OK`), as TF Serving does.

        Args:
            model_name: the model the request named ("" when it named none).
            status: TF Serving's status code name, e.g. `OK` or `NOT_FOUND`.
            api: the REST verb or the gRPC method.
            entrypoint: `REST` or `GRPC`.
            latency_micros: the request's wall time in microseconds.
        """
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            if status != "OK":
                return
            key = (model_name, api, entrypoint)
            buckets, total = self._latencies.get(key) or ([0] * (len(LATENCY_BUCKETS) + 1), 0.0)
            index = next(
                (i for i, limit in enumerate(LATENCY_BUCKETS) if latency_micros < limit),
                len(LATENCY_BUCKETS),
            )
            buckets[index] += 1
            self._latencies[key] = (buckets, total + latency_micros)

    def request_count(self, model_name: str, status: str = "OK") -> int:
        """Requests counted for `model_name` with `status`."""
        with self._lock:
            return self._counts.get((model_name, status), 0)

    def prometheus_text(self) -> str:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry).decode("utf-8")


def read_monitoring_config_file(path) -> str | None:
    """The Prometheus path a `--monitoring_config_file` asks for, or None when it is off.

    The file is TF Serving's `MonitoringConfig` in text format, e.g.
    `prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }`;
    an empty `path` means `/monitoring/prometheus/metrics`.

    Raises:
        ValueError: not a valid `MonitoringConfig`, or a path not starting with `/`.
        OSError: the file can't be read.
    """
    config = read_text_proto_file(path, MonitoringConfig)
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ValueError(
            f'{path}: prometheus_config.path must start with "/". Received: path: "{metrics_path}"'
        )
    return metrics_path
