// benchindicator: a compute-heavy handler. Every trade goes into a window of
// the last `window` prices (a ring); each event then computes the window's
// mean, standard deviation and least-squares slope (three passes over the
// window) and a z-score signal. No orders: the figure is the handler's cost.
module.exports = {
  metadata: {
    name: 'benchindicator',
    displayName: 'Bench: windowed indicator',
    description: 'Mean, deviation and regression slope over a price window per trade.',
    tag: 'v1.0.0',
    events: ['Trade'],
    config: [
      { name: 'window', type: 'int', default: 500, description: 'Prices in the window.' },
      { name: 'threshold', type: 'float', default: 2.5, description: 'z-score of a signal.' },
    ],
  },
  create({ config }) {
    const n = config.window;
    const prices = new Array(n).fill(0);
    let head = 0;
    let filled = 0;
    let signals = 0;
    let last = { mean: 0, sd: 0, slope: 0, z: 0 };
    return {
      onTrade(ctx, evt, payload) {
        prices[head] = payload.price;
        head = head + 1 === n ? 0 : head + 1;
        if (filled < n) filled++;
        let sum = 0;
        for (let i = 0; i < filled; i++) sum += prices[i];
        const mean = sum / filled;
        let sq = 0;
        for (let i = 0; i < filled; i++) {
          const d = prices[i] - mean;
          sq += d * d;
        }
        const sd = Math.sqrt(sq / filled);
        // slope of price against age, oldest first
        let sxy = 0;
        let sxx = 0;
        const xmean = (filled - 1) / 2;
        for (let k = 0; k < filled; k++) {
          const i = (head - filled + k + n) % n;
          const dx = k - xmean;
          sxy += dx * (prices[i] - mean);
          sxx += dx * dx;
        }
        const slope = sxx > 0 ? sxy / sxx : 0;
        const z = sd > 0 ? (payload.price - mean) / sd : 0;
        if (Math.abs(z) > config.threshold) signals++;
        last = { mean, sd, slope, z };
      },
    };
  },
};
