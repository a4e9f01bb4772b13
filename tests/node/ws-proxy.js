// A WebSocket proxy (the `ws` package) with the bug of the story behind
// meshwatch: it keeps per-connection state for as long as a client stays
// connected, and never trims it. Every message a client sends is kept in
// that client's session history, so with long-lived connections its
// memory climbs until the process is killed. Nothing here knows about
// meshwatch.
//
// With OTLP_URL set it exports its runtime metrics with the OpenTelemetry
// SDK (telemetry.js), the V8 heap limit among them. It prints `port N`
// once it listens.
'use strict';

const { WebSocketServer } = require('ws');

if (process.env.OTLP_URL) {
  require('./telemetry').startTelemetry({ heapLimit: true });
}

const sessions = new Map();
const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });

server.on('connection', (socket) => {
  const session = { opened: Date.now(), history: [] };
  sessions.set(socket, session);
  socket.on('message', (data) => {
    // The leak: the history is kept for the session's whole life.
    session.history.push(data.toString());
    socket.send(`ack ${session.history.length}`);
  });
  socket.on('close', () => sessions.delete(socket));
});

server.on('listening', () => {
  console.log(`port ${server.address().port}`);
});
