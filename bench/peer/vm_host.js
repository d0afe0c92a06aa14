'use strict';
// Node.js peer (a): N instances as N vm contexts on one thread. One heap for
// all of them, no memory cap or CPU budget per instance. The module is
// compiled once (vm.Script) and run in each context, as stratd compiles a
// revision once and loads its bytecode into each instance.
//
// usage: node --expose-gc vm_host.js --strategy FILE.js --events FILE.bin
//        --instances N [--mode dispatch|memory] [--windows R] [--seconds S]
//        [--warmup S]
// Prints one JSON object (see bench/run.sh for the fields used).
const vm = require('vm');
const fs = require('fs');
const c = require('./common');

const args = c.parseArgs(process.argv.slice(2), {
  strategy: '',
  events: '',
  instances: 1,
  mode: 'dispatch',
  windows: 5,
  seconds: 2,
  warmup: 1,
});
const N = args.instances;
const events = c.readEvents(args.events, false);
const n = events.length / c.FIELDS;
const script = new vm.Script(c.wrap(fs.readFileSync(args.strategy, 'utf8')), {
  filename: args.strategy,
});

global.gc();
global.gc();
const rss0 = c.rssBytes();
const instances = [];
const starts = [];
for (let i = 0; i < N; i++) {
  const t0 = process.hrtime.bigint();
  const context = vm.createContext({});
  const factory = script.runInContext(context);
  instances.push(c.instantiate(factory, `peer-${i + 1}`));
  starts.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
global.gc();
global.gc();
const rss1 = c.rssBytes();

const result = {
  form: 'vm',
  instances: N,
  rss_per_instance_bytes: (rss1 - rss0) / N,
  start_mean_ms: starts.reduce((a, b) => a + b, 0) / N,
  start_p99_ms: [...starts].sort((a, b) => a - b)[Math.max(0, Math.ceil(0.99 * N) - 1)],
};

if (args.mode === 'dispatch') {
  // Runs of up to 256 events, delivered instance by instance (the gateway's
  // order under load); smaller runs for large fleets so the clock is read
  // often enough.
  const run = Math.max(1, Math.min(256, Math.floor(65536 / N)));
  let next = 0;
  const runFor = (seconds) => {
    const end = performance.now() + seconds * 1000;
    let delivered = 0;
    while (performance.now() < end) {
      for (let s = 0; s < N; s++) {
        const inst = instances[s];
        for (let k = 0; k < run; k++) c.deliver(inst, events, n, next + k);
      }
      next += run;
      delivered += run * N;
    }
    return delivered;
  };
  runFor(args.warmup);
  const perCpu = [];
  const perWall = [];
  for (let w = 0; w < args.windows; w++) {
    const cpu0 = c.cpuSeconds();
    const wall0 = performance.now();
    const d = runFor(args.seconds);
    perCpu.push(d / (c.cpuSeconds() - cpu0));
    perWall.push(d / ((performance.now() - wall0) / 1000));
  }
  result.rate_cpu = c.median(perCpu);
  result.rate_wall = c.median(perWall);
  result.rates_cpu = perCpu.map(Math.round);
}
process.stdout.write(JSON.stringify(result) + '\n');
