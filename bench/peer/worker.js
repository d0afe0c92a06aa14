'use strict';
// One instance of peer (b): loads the module in this worker's own isolate,
// reports 'ready', then on 'run' consumes the published events from the
// shared buffer until the stop flag is set (see workers_host.js).
const { parentPort, workerData } = require('worker_threads');
const vm = require('vm');
const fs = require('fs');
const c = require('./common');

const { index } = workerData;
const events = new Float64Array(workerData.events);
const ctl = new Int32Array(workerData.ctl);
const n = events.length / c.FIELDS;
const factory = vm.runInThisContext(c.wrap(fs.readFileSync(workerData.strategy, 'utf8')), {
  filename: workerData.strategy,
});
const inst = c.instantiate(factory, `peer-${index + 1}`);

function run() {
  let mine = 0;
  while (Atomics.load(ctl, 2) === 0) {
    const published = Atomics.load(ctl, 0);
    if (published === mine) {
      Atomics.wait(ctl, 0, mine, 50);
      continue;
    }
    // at most a run at a time, so progress (and the stop flag) is seen often
    const end = Math.min(published, mine + 256);
    for (let i = mine; i < end; i++) c.deliver(inst, events, n, i);
    mine = end;
    Atomics.store(ctl, 4 + index, mine);
  }
}

parentPort.on('message', (m) => {
  if (m === 'gc') {
    global.gc();
    global.gc();
    parentPort.postMessage('gced');
  } else if (m === 'run') {
    run();
  }
});
parentPort.postMessage('ready');
