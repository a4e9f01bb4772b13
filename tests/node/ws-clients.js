// Clients of ws-proxy.js that connect and stay connected, each sending a
// message of SIZE bytes RATE times a second, as a real proxy's long-lived
// clients do.
//
// Usage: node ws-clients.js PORT CLIENTS RATE SIZE
'use strict';

const WebSocket = require('ws');

const [port, clients, rate, size] = process.argv.slice(2).map(Number);
if (!port || !clients || !rate || !size) {
  throw new Error('usage: node ws-clients.js PORT CLIENTS RATE SIZE');
}

for (let c = 0; c < clients; c++) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
  socket.on('open', () => {
    let sent = 0;
    setInterval(() => {
      // A distinct message each time, so nothing is shared on the heap.
      const head = `client ${c} message ${sent++} `;
      socket.send(head + 'x'.repeat(Math.max(0, size - head.length)));
    }, 1000 / rate);
  });
  socket.on('error', (err) => {
    console.error(`client ${c}: ${err.message}`);
  });
}
