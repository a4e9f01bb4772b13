"""A Python service that leaks into a dict and exports its process metrics
with the OpenTelemetry SDK, as a team's service would: the SDK's system
metrics instrumentation, the standard OTLP/HTTP exporter, the host and
process resource detectors. Nothing here knows about meshwatch.

Environment: OTEL_SERVICE_NAME, OTLP_URL (the collector's /v1/metrics),
LEAK_BYTES_PER_SEC (0: no leak).
"""

import os
import time

os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "host,process")

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

provider = MeterProvider(
    resource=Resource.create(),
    metric_readers=[
        PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=os.environ["OTLP_URL"]),
            export_interval_millis=1000,
        )
    ],
)
SystemMetricsInstrumentor().instrument(meter_provider=provider)

# The leak: every request's payload kept in a dict that is never pruned.
seen = {}
per_tick = int(os.environ.get("LEAK_BYTES_PER_SEC", "0")) // 10
print(f"ready {os.getpid()}", flush=True)
request = 0
while True:
    time.sleep(0.1)
    if per_tick > 0:
        request += 1
        seen[request] = b"x" * per_tick
