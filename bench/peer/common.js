'use strict';
// Shared by the Node.js peers: the strategy module wrapper, the env given to
// create(env), the event file reader and the argument objects. The peers
// build ctx once per instance and evt/payload per delivery, the same
// three objects with the same shapes the gateway passes to onTrade.
const fs = require('fs');

const PROVIDER = 'bench';
const SYMBOL = 'BTC-USDT';
const FIELDS = 6; // price, quantity, side, tradeId, seq, ts (see bench/events.c)

// CommonJS: evaluating the wrapped text yields function (module, exports).
function wrap(source) {
  return `(function (module, exports) {\n${source}\n})`;
}

function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(String(text));
  if (!m) return Number(text);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]];
}

function configOf(metadata) {
  const config = {};
  for (const f of metadata.config || []) {
    config[f.name] = f.type === 'duration' ? parseDuration(f.default) : f.default;
  }
  return config;
}

// What create(env) receives: the same members as the gateway's env, with
// order calls counted and dropped (the dispatch figures place no orders).
function makeEnv(metadata) {
  let orders = 0;
  return {
    config: configOf(metadata),
    metadata,
    events: metadata.events,
    helpers: { log() {}, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) },
    runtime: {
      isTradingActive: () => true,
      isDryRun: () => true,
      providers: () => [PROVIDER],
      selectProvider: () => PROVIDER,
      submitMarketOrder: () => `peer-${++orders}`,
      submitOrder: () => `peer-${++orders}`,
      cancelOrder: () => true,
      getLastPrice: () => null,
      getBidPrice: () => null,
      getAskPrice: () => null,
      getMarketState: () => null,
      getInstrument: () => null,
    },
  };
}

// Instantiates a module from its factory function: create(env) -> handlers.
function instantiate(factory, id) {
  const module = { exports: {} };
  factory(module, module.exports);
  const handlers = module.exports.create(makeEnv(module.exports.metadata));
  const ctx = {
    instanceId: id,
    strategy: module.exports.metadata.name,
    hash: 'sha256:peer',
    provider: PROVIDER,
    symbol: SYMBOL,
  };
  return { handlers, onTrade: handlers.onTrade, ctx };
}

// The events as a Float64Array, FIELDS values per trade; `shared` puts them
// in a SharedArrayBuffer for the worker peer.
function readEvents(path, shared) {
  const bytes = fs.readFileSync(path);
  const buffer = shared ? new SharedArrayBuffer(bytes.length) : new ArrayBuffer(bytes.length);
  new Uint8Array(buffer).set(bytes);
  return new Float64Array(buffer);
}

// Delivery number `i` of the replay (the file's n trades, over and over;
// seq and tradeId keep increasing): fresh evt and payload, as the gateway
// builds them.
function deliver(inst, events, n, i) {
  const k = i % n;
  const o = k * FIELDS;
  const cycle = i - k;
  const evt = {
    type: 'Trade',
    provider: PROVIDER,
    symbol: SYMBOL,
    seq: events[o + 4] + cycle,
    ts: events[o + 5],
  };
  const payload = {
    price: events[o],
    quantity: events[o + 1],
    side: events[o + 2] === 0 ? 'buy' : 'sell',
    tradeId: events[o + 3] + cycle,
  };
  inst.onTrade.call(inst.handlers, inst.ctx, evt, payload);
}

function rssBytes() {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return Number(m[1]) * 1024;
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function parseArgs(argv, defaults) {
  const out = { ...defaults };
  for (let i = 0; i + 1 < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in defaults)) throw new Error(`unknown option ${argv[i]}`);
    out[key] = typeof defaults[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return out;
}

module.exports = {
  FIELDS,
  wrap,
  instantiate,
  readEvents,
  deliver,
  rssBytes,
  cpuSeconds,
  median,
  parseArgs,
};
