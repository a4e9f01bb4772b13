// The OpenTelemetry SDK set up as a team's Node.js service sets it up: the
// SDK's runtime and host instrumentations, the standard OTLP exporter,
// resource detectors for host and process, exporting every second.
// Nothing here knows about meshwatch.
//
// Environment: OTEL_SERVICE_NAME, OTLP_URL (the collector's /v1/metrics),
// OTLP_ENCODING (proto or json).
'use strict';

const v8 = require('v8');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { RuntimeNodeInstrumentation } = require('@opentelemetry/instrumentation-runtime-node');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HostMetrics } = require('@opentelemetry/host-metrics');
const {
  defaultResource,
  detectResources,
  envDetector,
  hostDetector,
  processDetector,
} = require('@opentelemetry/resources');

function startTelemetry({ heapLimit = false } = {}) {
  const encoding = process.env.OTLP_ENCODING || 'proto';
  const { OTLPMetricExporter } =
    encoding === 'json'
      ? require('@opentelemetry/exporter-metrics-otlp-http')
      : require('@opentelemetry/exporter-metrics-otlp-proto');
  const meterProvider = new MeterProvider({
    resource: defaultResource().merge(
      detectResources({ detectors: [envDetector, hostDetector, processDetector] }),
    ),
    readers: [
      new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter({ url: process.env.OTLP_URL }),
        exportIntervalMillis: 1000,
        exportTimeoutMillis: 900,
      }),
    ],
  });
  registerInstrumentations({
    meterProvider,
    instrumentations: [new RuntimeNodeInstrumentation({ monitoringPrecision: 100 })],
  });
  new HostMetrics({ meterProvider }).start();
  if (heapLimit) {
    // The semantic conventions' V8 heap limit, which the runtime
    // instrumentation of this version defines but does not export: a
    // service that wants the time to its heap limit adds it.
    meterProvider
      .getMeter('heap-limit')
      .createObservableGauge('v8js.memory.heap.limit', { unit: 'By' })
      .addCallback((result) => result.observe(v8.getHeapStatistics().heap_size_limit));
  }
  return meterProvider;
}

module.exports = { startTelemetry };
