// momentum: buys after a run of rising trade prices and sells the position
// after a run of falling ones.
class RunDetector {
  #last = null;
  #run = 0; // > 0 rising streak, < 0 falling streak

  push(price) {
    if (this.#last !== null) {
      if (price > this.#last) this.#run = this.#run > 0 ? this.#run + 1 : 1;
      else if (price < this.#last) this.#run = this.#run < 0 ? this.#run - 1 : -1;
    }
    this.#last = price;
    return this.#run;
  }
}

module.exports = {
  metadata: {
    name: 'momentum',
    displayName: 'Momentum',
    description: 'Buys after `lookback` rising trades, sells after `lookback` falling ones.',
    tag: 'v1.0.0',
    events: ['Trade', 'ExecReport'],
    config: [
      { name: 'lookback', type: 'int', default: 4, description: 'Trades in a row that make a run.' },
      { name: 'size', type: 'float', default: 0.01, description: 'Order size in base units.' },
      { name: 'cooldown', type: 'duration', default: '2s', description: 'Minimum time between orders.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime, helpers }) {
    const runs = new Map();
    let position = 0;
    let pending = false;
    let lastOrderAt = -Infinity;

    const trade = (ctx, side, run, price) => {
      lastOrderAt = Date.now();
      try {
        const id = runtime.submitMarketOrder(ctx.provider, side, config.size, ctx.symbol);
        pending = true; // until its report: a refused order has none
        helpers.log('momentum', side, ctx.symbol, { run, price, order: id });
      } catch (e) {
        // the risk limits or the order rate refused it: try again after the cooldown
        helpers.log('momentum refused', side, ctx.symbol, { reason: e.message });
      }
    };

    return {
      onTrade(ctx, evt, { price }) {
        const detector = runs.get(ctx.symbol) ?? new RunDetector();
        runs.set(ctx.symbol, detector);
        const run = detector.push(price);
        if (pending || Date.now() - lastOrderAt < config.cooldown) return;
        if (position === 0 && run >= config.lookback) trade(ctx, 'buy', run, price);
        else if (position > 0 && run <= -config.lookback) trade(ctx, 'sell', run, price);
      },
      onOrderFilled(ctx, evt, report) {
        position += report.side === 'buy' ? report.filledQuantity : -report.filledQuantity;
        pending = false;
      },
      onOrderRejected(ctx, evt, report) {
        helpers.log('momentum: order rejected', report.reason);
        pending = false;
      },
      onOrderCancelled() {
        pending = false;
      },
    };
  },
};
