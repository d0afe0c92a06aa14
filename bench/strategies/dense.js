// benchdense: the density benchmark's 5 KB strategy (indicators, position
// and risk bookkeeping, handlers for trades, tickers and reports).
class Ema {
  constructor(period) {
    this.alpha = 2 / (period + 1);
    this.value = null;
  }
  push(x) {
    this.value = this.value === null ? x : this.value + this.alpha * (x - this.value);
    return this.value;
  }
}

class RollingStats {
  constructor(size) {
    this.size = size;
    this.values = [];
    this.sum = 0;
    this.sumSq = 0;
  }
  push(x) {
    this.values.push(x);
    this.sum += x;
    this.sumSq += x * x;
    if (this.values.length > this.size) {
      const old = this.values.shift();
      this.sum -= old;
      this.sumSq -= old * old;
    }
  }
  get deviation() {
    const n = this.values.length;
    if (n < 2) return 0;
    const m = this.sum / n;
    return Math.sqrt(Math.max(0, this.sumSq / n - m * m));
  }
}

class Position {
  constructor() {
    this.quantity = 0;
    this.cost = 0;
    this.realised = 0;
    this.fees = 0;
  }
  fill(side, quantity, price, fee) {
    const signed = side === 'buy' ? quantity : -quantity;
    if (this.quantity !== 0 && Math.sign(signed) !== Math.sign(this.quantity)) {
      const closing = Math.min(Math.abs(signed), Math.abs(this.quantity));
      const average = this.cost / this.quantity;
      this.realised += closing * (price - average) * Math.sign(this.quantity);
      this.cost -= average * closing * Math.sign(this.quantity);
      this.quantity += Math.sign(signed) * closing;
      const rest = Math.abs(signed) - closing;
      if (rest > 0) {
        this.quantity += Math.sign(signed) * rest;
        this.cost += Math.sign(signed) * rest * price;
      }
    } else {
      this.quantity += signed;
      this.cost += signed * price;
    }
    this.fees += fee;
  }
  unrealised(mark) {
    return this.quantity * mark - this.cost;
  }
}

class RiskGate {
  constructor(maxPosition, maxLoss, cooldownMs) {
    Object.assign(this, { maxPosition, maxLoss, cooldownMs, lastOrderAt: -Infinity });
    this.halted = false;
  }
  allows(position, side, size, mark, now) {
    if (this.halted || now - this.lastOrderAt < this.cooldownMs) return false;
    const next = position.quantity + (side === 'buy' ? size : -size);
    if (Math.abs(next) > this.maxPosition) return false;
    this.halted = position.realised + position.unrealised(mark) < -this.maxLoss;
    return !this.halted;
  }
}

module.exports = {
  metadata: {
    name: 'benchdense',
    displayName: 'Bench: density strategy',
    description: 'EMA crossover with a volatility filter.',
    tag: 'v1.0.0',
    events: ['Trade', 'Ticker', 'ExecReport'],
    config: [
      { name: 'fast', type: 'int', default: 12, description: 'Fast EMA period (trades).' },
      { name: 'slow', type: 'int', default: 48, description: 'Slow EMA period (trades).' },
      { name: 'window', type: 'int', default: 200, description: 'Volatility window.' },
      { name: 'maxDeviation', type: 'float', default: 0.004, description: 'Largest relative deviation.' },
      { name: 'size', type: 'float', default: 0.001, description: 'Order size in base units.' },
      { name: 'maxPosition', type: 'float', default: 0.01, description: 'Largest absolute position.' },
      { name: 'maxLoss', type: 'float', default: 500, description: 'Halt below this loss.' },
      { name: 'cooldown', type: 'duration', default: '5s', description: 'Time between orders.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime, helpers }) {
    const fast = new Ema(config.fast);
    const slow = new Ema(config.slow);
    const stats = new RollingStats(config.window);
    const position = new Position();
    const risk = new RiskGate(config.maxPosition, config.maxLoss, config.cooldown);
    const book = { bid: 0, ask: 0 };
    const open = new Map();
    let previousSign = 0;
    let trades = 0;

    const mark = () => (book.bid && book.ask ? (book.bid + book.ask) / 2 : slow.value || 0);

    const maybeTrade = (ctx, price) => {
      const f = fast.value;
      const s = slow.value;
      if (f === null || s === null || trades < config.slow) return;
      const sign = Math.sign(f - s);
      const crossed = sign !== 0 && previousSign !== 0 && sign !== previousSign;
      previousSign = sign || previousSign;
      if (!crossed || open.size > 0) return;
      if (stats.deviation / price > config.maxDeviation) return;
      const side = sign > 0 ? 'buy' : 'sell';
      const now = Date.now();
      if (!risk.allows(position, side, config.size, mark(), now)) return;
      risk.lastOrderAt = now;
      const id = runtime.submitMarketOrder(ctx.provider, side, config.size, ctx.symbol);
      open.set(id, { side, at: now });
      helpers.log('benchdense: order', { id, side, price });
    };

    return {
      onTrade(ctx, evt, { price }) {
        trades++;
        fast.push(price);
        slow.push(price);
        stats.push(price);
        maybeTrade(ctx, price);
      },
      onTicker(ctx, evt, { bid, ask }) {
        book.bid = bid;
        book.ask = ask;
      },
      onOrderFilled(ctx, evt, report) {
        position.fill(report.side, report.lastQuantity, report.lastPrice, report.fee);
        open.delete(report.clientOrderId);
      },
      onOrderRejected(ctx, evt, report) {
        open.delete(report.clientOrderId);
        helpers.log('benchdense: rejected', report.reason);
      },
    };
  },
};
