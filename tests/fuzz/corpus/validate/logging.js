// logging: counts every event it receives and logs a summary on a timer.
// Shows timers, helpers.log and the per-event context.
module.exports = {
  metadata: {
    name: 'logging',
    displayName: 'Event logger',
    description: 'Logs a per-symbol summary of the market events it receives.',
    tag: 'v1.0.0',
    events: ['Trade', 'Ticker', 'BookSnapshot', 'KlineSummary', 'BalanceUpdate'],
    config: [
      { name: 'interval', type: 'duration', default: '10s', description: 'How often to log.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config, helpers }) {
    const counts = new Map();
    const count = (ctx, evt) => {
      const key = `${ctx.provider}/${ctx.symbol || '-'}`;
      const perType = counts.get(key) ?? {};
      perType[evt.type] = (perType[evt.type] ?? 0) + 1;
      counts.set(key, perType);
    };
    setInterval(() => {
      for (const [key, perType] of counts) helpers.log('events', key, perType);
    }, config.interval);
    return {
      onTrade: count,
      onTicker: count,
      onBookSnapshot: count,
      onKlineSummary: count,
      onBalanceUpdate: (ctx, evt, balance) => {
        count(ctx, evt);
        helpers.log('balance', balance.asset, balance.total);
      },
    };
  },
};
