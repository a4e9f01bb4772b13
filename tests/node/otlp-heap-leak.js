// A Node.js service that leaks into its V8 heap and exports its runtime
// metrics with the OpenTelemetry SDK, as a team's service would: the SDK's
// runtime and host instrumentations, the standard OTLP exporter, resource
// detectors for host and process. Nothing here knows about meshwatch.
//
// Environment: OTEL_SERVICE_NAME, OTLP_URL (the collector's /v1/metrics),
// OTLP_ENCODING (proto or json), LEAK_BYTES_PER_SEC (0: no leak), STALLS
// (callbacks that hold the event loop, as `spin@AT_MS:FOR_MS` burning CPU
// or `sleep@AT_MS:FOR_MS` blocked without it, comma-separated).
'use strict';

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

// The leak: per-"connection" state that is never released, as a proxy
// keeping every session it ever saw.
const sessions = [];
const perTick = Math.floor(Number(process.env.LEAK_BYTES_PER_SEC || 0) / 10);
setInterval(() => {
  if (perTick > 0) {
    // A packed array of small integers: 8 bytes an element, on the V8 heap
    // (a repeated string would be a rope sharing its parts, a Buffer off
    // the heap).
    sessions.push(new Array(Math.ceil(perTick / 8)).fill(sessions.length));
  }
}, 100);

// Stalls: one callback holding the loop, spinning or blocked.
for (const stall of (process.env.STALLS || '').split(',').filter(Boolean)) {
  const [, kind, at, ms] = stall.match(/^(spin|sleep)@(\d+):(\d+)$/) || [];
  if (!kind) {
    throw new Error(`STALLS: ${stall} is not spin@AT_MS:FOR_MS or sleep@AT_MS:FOR_MS`);
  }
  setTimeout(() => {
    if (kind === 'spin') {
      const end = Date.now() + Number(ms);
      while (Date.now() < end) {
        // A loop that does not yield.
      }
    } else {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(ms));
    }
  }, Number(at));
}

console.log(`ready ${process.pid}`);
