module.exports = { metadata: { name: 'x', displayName: 'X', events: [,'Trade'] } };
