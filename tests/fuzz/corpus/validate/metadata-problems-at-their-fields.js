// metadata: { name: 'decoy' }
const s = 'metadata: {', re = /metadata: {/, t = `metadata: ${{ a: 1 }.a}`;
module.exports = {
  metadata: {
    name: 'ok', /* tag: 1 */
    'tag': 'no good',
    events: ['Trade', 'Nope'],
    config: [
      { name: 'a', type: 'int', description: `tag: ${'}'}` },
      { name: 'b', type: 'strange', options: [1] },
    ],
  },
  create() { return {}; },
};
