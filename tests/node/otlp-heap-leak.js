// A Node.js service that leaks into its V8 heap and exports its runtime
// metrics with the OpenTelemetry SDK, as a team's service would (see
// telemetry.js). Nothing here knows about meshwatch.
//
// Environment: telemetry.js's, LEAK_BYTES_PER_SEC (0: no leak), STALLS
// (callbacks that hold the event loop, as `spin@AT_MS:FOR_MS` burning CPU
// or `sleep@AT_MS:FOR_MS` blocked without it, comma-separated).
'use strict';

require('./telemetry').startTelemetry();

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
