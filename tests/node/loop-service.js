// A Node.js HTTP service for meshwatch's end-to-end tests, watched from
// outside with no meshwatch code in it.
//
//   /              a little CPU work, then the answer (the load test's bulk)
//   /work?ms=N     N ms of CPU work in one callback: slow, but it returns
//   /spin?ms=N     a loop that never yields for N ms: the bug under test
//   /block?ms=N    the thread blocked N ms in a synchronous wait
//
// It prints `port N` once it listens. A timer turns the loop ten times a
// second while idle, as real services' timers do.
'use strict';

const http = require('http');

function checksum(text, rounds) {
  let total = 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < text.length; i++) {
      total = (total * 31 + text.charCodeAt(i)) % 1000003;
    }
  }
  return total;
}

function busyFor(ms) {
  const end = Date.now() + ms;
  let value = 0;
  while (Date.now() < end) {
    value = (value * 31 + 7) % 1000003;
  }
  return value;
}

function spinWithoutYielding(ms) {
  return busyFor(ms);
}

function blockFor(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const ms = Number(url.searchParams.get('ms') || 0);
  switch (url.pathname) {
    case '/work':
      busyFor(ms);
      break;
    case '/spin':
      spinWithoutYielding(ms);
      break;
    case '/block':
      blockFor(ms);
      break;
    default:
      break;
  }
  res.end(String(checksum('meshwatch', 20)));
});

server.listen(0, '127.0.0.1', () => {
  console.log(`port ${server.address().port}`);
});
setInterval(() => {}, 100);
