'use strict';
// Node.js peer (b): one worker_threads worker per instance, each with
// resourceLimits (its own heap with a cap, like a stratd instance; a
// runaway worker can be terminated). The events sit in a SharedArrayBuffer
// that every worker reads; the main thread publishes them in runs of 256
// (one counter store and notify per run, not a message per event per
// worker: the cheapest fan-out Node offers) and, when the slowest worker is
// a ring's length behind, sleeps a millisecond at a time until it catches
// up.
//
// usage: node --expose-gc workers_host.js --strategy FILE.js --events FILE.bin
//        --instances N [--mode dispatch|memory] [--windows R] [--seconds S]
//        [--warmup S] [--memory-mb M] [--stack-mb K]
const { Worker } = require('worker_threads');
const path = require('path');
const c = require('./common');

const args = c.parseArgs(process.argv.slice(2), {
  strategy: '',
  events: '',
  instances: 1,
  mode: 'dispatch',
  windows: 5,
  seconds: 2,
  warmup: 1,
  'memory-mb': 64,
  'stack-mb': 1,
});
const N = args.instances;
const RUN = 256;
const events = c.readEvents(args.events, true);
const n = events.length / c.FIELDS;
// ctl[0] published events, ctl[1] never set (the publisher sleeps on it),
// ctl[2] stop flag, ctl[4 + k] events consumed by worker k
const ctl = new Int32Array(new SharedArrayBuffer(4 * (4 + N)));

function spawn(k) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const worker = new Worker(path.join(__dirname, 'worker.js'), {
      workerData: { strategy: args.strategy, events: events.buffer, ctl: ctl.buffer, index: k },
      resourceLimits: {
        maxOldGenerationSizeMb: args['memory-mb'],
        stackSizeMb: args['stack-mb'],
      },
    });
    worker.once('message', (m) => {
      if (m === 'ready') resolve({ worker, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
    worker.once('error', reject);
  });
}

function ask(worker, what) {
  return new Promise((resolve) => {
    worker.once('message', resolve);
    worker.postMessage(what);
  });
}

async function main() {
  global.gc();
  global.gc();
  const rss0 = c.rssBytes();
  const workers = [];
  const starts = [];
  for (let k = 0; k < N; k++) {
    const { worker, ms } = await spawn(k);
    workers.push(worker);
    starts.push(ms);
  }
  for (const w of workers) await ask(w, 'gc');
  global.gc();
  global.gc();
  const rss1 = c.rssBytes();
  const result = {
    form: 'workers',
    instances: N,
    rss_per_instance_bytes: (rss1 - rss0) / N,
    start_mean_ms: starts.reduce((a, b) => a + b, 0) / N,
    start_p99_ms: [...starts].sort((a, b) => a - b)[Math.max(0, Math.ceil(0.99 * N) - 1)],
  };

  if (args.mode === 'dispatch') {
    for (const w of workers) w.postMessage('run');
    const cap = n - RUN;
    let published = 0;
    const consumed = () => {
      let total = 0;
      for (let k = 0; k < N; k++) total += Atomics.load(ctl, 4 + k);
      return total;
    };
    const publishFor = (seconds) => {
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end) {
        let slowest = Infinity;
        for (let k = 0; k < N; k++) slowest = Math.min(slowest, Atomics.load(ctl, 4 + k));
        if (published + RUN - slowest <= cap) {
          published += RUN;
          Atomics.store(ctl, 0, published);
          Atomics.notify(ctl, 0);
        } else {
          Atomics.wait(ctl, 1, 0, 1);
        }
      }
    };
    publishFor(args.warmup);
    const perCpu = [];
    const perWall = [];
    for (let w = 0; w < args.windows; w++) {
      const d0 = consumed();
      const cpu0 = c.cpuSeconds();
      const wall0 = performance.now();
      publishFor(args.seconds);
      const d = consumed() - d0;
      perCpu.push(d / (c.cpuSeconds() - cpu0));
      perWall.push(d / ((performance.now() - wall0) / 1000));
    }
    Atomics.store(ctl, 2, 1);
    Atomics.notify(ctl, 0);
    result.rate_cpu = c.median(perCpu);
    result.rate_wall = c.median(perWall);
    result.rates_cpu = perCpu.map(Math.round);
  }
  await Promise.all(workers.map((w) => w.terminate()));
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
