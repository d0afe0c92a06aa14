// noop: the smallest valid strategy. It subscribes to trades and does
// nothing with them; useful as a template and as a density baseline.
module.exports = {
  metadata: {
    name: 'noop',
    displayName: 'No-op',
    description: 'Receives trades and ignores them.',
    tag: 'v1.0.0',
    events: ['Trade'],
    config: [
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create() {
    return {};
  },
};
