// mean_reversion: buys when the price falls `bands` standard deviations
// below its rolling mean and sells the position when it returns above the
// mean.
class RollingStats {
  #values;
  #next = 0;
  #filled = 0;

  constructor(size) {
    this.#values = new Float64Array(size);
  }

  push(value) {
    this.#values[this.#next] = value;
    this.#next = (this.#next + 1) % this.#values.length;
    this.#filled = Math.min(this.#filled + 1, this.#values.length);
  }

  get ready() {
    return this.#filled === this.#values.length;
  }

  get mean() {
    let sum = 0;
    for (let i = 0; i < this.#filled; i++) sum += this.#values[i];
    return sum / this.#filled;
  }

  get stddev() {
    const mean = this.mean;
    let sq = 0;
    for (let i = 0; i < this.#filled; i++) sq += (this.#values[i] - mean) ** 2;
    return Math.sqrt(sq / this.#filled);
  }
}

module.exports = {
  metadata: {
    name: 'mean_reversion',
    displayName: 'Mean reversion',
    description: 'Buys below the rolling mean minus `bands` deviations, sells above the mean.',
    tag: 'v1.0.0',
    events: ['Trade', 'ExecReport'],
    config: [
      { name: 'window', type: 'int', default: 50, description: 'Trades in the rolling window.' },
      { name: 'bands', type: 'float', default: 1.5, description: 'Entry distance in deviations.' },
      { name: 'size', type: 'float', default: 0.01, description: 'Order size in base units.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime, helpers }) {
    const stats = new Map();
    const held = new Map(); // symbol -> quantity
    const pending = new Set();

    return {
      onTrade(ctx, evt, { price }) {
        const s = stats.get(ctx.symbol) ?? new RollingStats(config.window);
        stats.set(ctx.symbol, s);
        s.push(price);
        if (!s.ready || pending.has(ctx.symbol)) return;
        const { mean, stddev } = s;
        const position = held.get(ctx.symbol) ?? 0;
        let side = null;
        if (position === 0 && price < mean - config.bands * stddev) side = 'buy';
        else if (position > 0 && price > mean) side = 'sell';
        if (!side) return;
        try {
          runtime.submitMarketOrder(ctx.provider, side, side === 'buy' ? config.size : position, ctx.symbol);
        } catch (e) {
          // refused (risk limits, order rate): no report will come; the next trade tries again
          helpers.log('mean_reversion refused', side, ctx.symbol, { reason: e.message });
          return;
        }
        pending.add(ctx.symbol);
        helpers.log('mean_reversion', side, ctx.symbol, { price, mean, stddev });
      },
      onOrderFilled(ctx, evt, report) {
        const delta = report.side === 'buy' ? report.filledQuantity : -report.filledQuantity;
        held.set(ctx.symbol, Math.max(0, (held.get(ctx.symbol) ?? 0) + delta));
        pending.delete(ctx.symbol);
      },
      onOrderRejected(ctx) {
        pending.delete(ctx.symbol);
      },
      onOrderCancelled(ctx) {
        pending.delete(ctx.symbol);
      },
    };
  },
};
