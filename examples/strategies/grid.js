// grid: places limit buys below and limit sells above the first traded
// price, `levels` on each side `spacing_pct` apart; when an order fills it
// puts the opposite order one step away, so the grid keeps harvesting the
// range.
module.exports = {
  metadata: {
    name: 'grid',
    displayName: 'Grid',
    description: 'Symmetric grid of limit orders around the first traded price.',
    tag: 'v1.0.0',
    events: ['Trade', 'ExecReport'],
    config: [
      { name: 'levels', type: 'int', default: 3, description: 'Orders on each side.' },
      { name: 'spacing_pct', type: 'float', default: 0.05, description: 'Distance between levels, percent.' },
      { name: 'size', type: 'float', default: 0.01, description: 'Order size in base units.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime, helpers }) {
    const grids = new Map(); // symbol -> { orders: Map<id, {side, price}> }
    const step = (price) => price * (config.spacing_pct / 100);
    const round = (price) => Math.round(price * 100) / 100;

    // An order the risk limits or the order rate refuse waits in `retry` and
    // is placed again at the next trade: the grid keeps every level.
    const place = (ctx, grid, side, price) => {
      try {
        const id = runtime.submitOrder(ctx.provider, side, config.size, round(price), ctx.symbol);
        grid.orders.set(id, { side, price });
      } catch (e) {
        grid.retry.push({ side, price });
        helpers.log('grid order refused', side, { price: round(price), reason: e.message });
      }
    };

    return {
      onTrade(ctx, evt, { price }) {
        const placed = grids.get(ctx.symbol);
        if (placed) {
          for (const { side, price: at } of placed.retry.splice(0)) place(ctx, placed, side, at);
          return;
        }
        const grid = { orders: new Map(), retry: [], center: price };
        grids.set(ctx.symbol, grid);
        for (let i = 1; i <= config.levels; i++) {
          place(ctx, grid, 'buy', price - i * step(price));
          place(ctx, grid, 'sell', price + i * step(price));
        }
        helpers.log('grid placed', ctx.symbol, { center: price, levels: config.levels });
      },
      onOrderFilled(ctx, evt, { clientOrderId }) {
        const grid = grids.get(ctx.symbol);
        const filled = grid?.orders.get(clientOrderId);
        if (!filled) return;
        grid.orders.delete(clientOrderId);
        const opposite = filled.side === 'buy' ? 'sell' : 'buy';
        const distance = step(grid.center);
        place(ctx, grid, opposite, filled.price + (opposite === 'sell' ? distance : -distance));
      },
      onOrderRejected(ctx, evt, { clientOrderId, reason }) {
        grids.get(ctx.symbol)?.orders.delete(clientOrderId);
        helpers.log('grid order rejected', reason);
      },
    };
  },
};
