// benchorder: the tick-to-order strategy. It watches trades and, on a
// condition (every `every`-th trade that is a sell at or below the previous
// trade's price), submits a dry-run market buy. Dry-run orders are matched
// like real ones but never check balances, so the order flow can run for as
// long as the benchmark needs. A refused order (the provider stopping) is
// counted, as a careful strategy would, rather than thrown.
module.exports = {
  metadata: {
    name: 'benchorder',
    displayName: 'Bench: order on condition',
    description: 'Submits a market order when a condition on trades holds.',
    tag: 'v1.0.0',
    events: ['Trade', 'ExecReport'],
    config: [
      { name: 'every', type: 'int', default: 50, description: 'Trades between orders, at least.' },
      { name: 'size', type: 'float', default: 0.001, description: 'Order size in base units.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime }) {
    let seen = 0;
    let prev = Infinity;
    let filled = 0;
    let refused = 0;
    return {
      onTrade(ctx, evt, payload) {
        seen++;
        const down = payload.price <= prev;
        prev = payload.price;
        if (seen >= config.every && down && payload.side === 'sell') {
          seen = 0;
          try {
            runtime.submitMarketOrder(ctx.provider, 'buy', config.size, ctx.symbol);
          } catch (e) {
            refused++;
          }
        }
      },
      onOrderFilled() {
        filled++;
      },
    };
  },
};
