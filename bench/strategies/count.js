// benchcount: the dispatch benchmark's trivial handler. It counts trades and
// sums their notional (price x quantity), nothing else. The gateway, the
// bare QuickJS baseline and both Node.js peers load this same file.
module.exports = {
  metadata: {
    name: 'benchcount',
    displayName: 'Bench: count trades',
    description: 'Counts trades and sums price x quantity.',
    tag: 'v1.0.0',
    events: ['Trade'],
    config: [],
  },
  create() {
    let count = 0;
    let notional = 0;
    return {
      onTrade(ctx, evt, payload) {
        count++;
        notional += payload.price * payload.quantity;
      },
    };
  },
};
