module.exports = { metadata: { name: 'b', displayName: 'B', events: ['Trade'], x: 1n }, create() {} };
