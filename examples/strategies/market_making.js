// market_making: keeps one bid and one ask around the mid price,
// `spread_bps` wide, and re-quotes when the mid moves more than
// `requote_bps`. Inventory is capped: past `max_inventory` it only quotes
// the side that reduces it.
module.exports = {
  metadata: {
    name: 'market_making',
    displayName: 'Market making',
    description: 'Two-sided quotes around the mid price with an inventory cap.',
    tag: 'v1.0.0',
    events: ['Ticker', 'ExecReport'],
    config: [
      { name: 'spread_bps', type: 'float', default: 10, description: 'Quote width in basis points.' },
      { name: 'requote_bps', type: 'float', default: 5, description: 'Mid move that triggers a re-quote.' },
      { name: 'size', type: 'float', default: 0.01, description: 'Quote size in base units.' },
      { name: 'max_inventory', type: 'float', default: 0.05, description: 'Largest position either way.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, runtime, helpers }) {
    const books = new Map(); // symbol -> { mid, bid, ask, inventory }

    const cancel = (book) => {
      for (const side of ['bid', 'ask']) {
        if (book[side]) runtime.cancelOrder(book[side]);
        book[side] = null;
      }
    };

    const quote = (ctx, book, mid) => {
      cancel(book);
      book.mid = mid;
      const half = (mid * config.spread_bps) / 20000;
      const round = (price) => Math.round(price * 100) / 100;
      try {
        if (book.inventory < config.max_inventory)
          book.bid = runtime.submitOrder(ctx.provider, 'buy', config.size, round(mid - half), ctx.symbol);
        if (book.inventory > -config.max_inventory)
          book.ask = runtime.submitOrder(ctx.provider, 'sell', config.size, round(mid + half), ctx.symbol);
      } catch (e) {
        // refused (risk limits, order rate): quote again at the next ticker
        book.mid = 0;
        helpers.log('market_making refused', ctx.symbol, { reason: e.message });
      }
    };

    return {
      onTicker(ctx, evt, { bid, ask }) {
        if (!(bid > 0 && ask > bid)) return;
        const mid = (bid + ask) / 2;
        const book = books.get(ctx.symbol) ?? { mid: 0, bid: null, ask: null, inventory: 0 };
        books.set(ctx.symbol, book);
        const moved = book.mid === 0 || (Math.abs(mid - book.mid) / book.mid) * 10000 > config.requote_bps;
        if (moved) quote(ctx, book, mid);
      },
      onOrderFilled(ctx, evt, { clientOrderId, side, filledQuantity }) {
        const book = books.get(ctx.symbol);
        if (!book) return;
        book.inventory += side === 'buy' ? filledQuantity : -filledQuantity;
        if (book.bid === clientOrderId) book.bid = null;
        if (book.ask === clientOrderId) book.ask = null;
        helpers.log('market_making fill', ctx.symbol, { side, inventory: book.inventory });
      },
    };
  },
};
