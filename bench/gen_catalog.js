'use strict';
// Writes a strategies directory in the on-disk format of DESIGN.md
// (<root>/<name>/<64 hex>/<name>.js and registry.json) holding S strategies
// (cat000, cat001, ...) of R revisions each (tags v1.0.0 .. v1.0.<R-1>,
// `latest` on the last). This is the layout `stratd bootstrap -write`
// produces; writing it directly takes a second instead of the bootstrap's
// one catalogue transaction per revision.
//
// usage: node gen_catalog.js ROOT [strategies] [revisions]
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const root = process.argv[2];
const S = Number(process.argv[3] || 1000);
const R = Number(process.argv[4] || 10);

function source(name, r) {
  return `// ${name}: catalogue entry, revision ${r}
module.exports = {
  metadata: {
    name: '${name}',
    displayName: 'Catalogue ${name}',
    description: 'A catalogue strategy for the control-plane benchmark (revision ${r}).',
    tag: 'v1.0.${r}',
    events: ['Trade', 'Ticker'],
    config: [
      { name: 'lookback', type: 'int', default: ${10 + r}, description: 'Trades considered.' },
      { name: 'size', type: 'float', default: 0.01, description: 'Order size in base units.' },
      { name: 'dry_run', type: 'bool', default: true, description: 'Never affect balances.' },
    ],
  },
  create({ config }) {
    const prices = [];
    return {
      onTrade(ctx, evt, { price }) {
        prices.push(price);
        if (prices.length > config.lookback) prices.shift();
      },
      onTicker() {},
    };
  },
};
`;
}

const registry = {};
for (let s = 0; s < S; s++) {
  const name = `cat${String(s).padStart(3, '0')}`;
  const entry = { tags: {}, hashes: {} };
  for (let r = 0; r < R; r++) {
    const text = source(name, r);
    const hex = crypto.createHash('sha256').update(text).digest('hex');
    const rel = `${name}/${hex}/${name}.js`;
    fs.mkdirSync(path.join(root, name, hex), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
    entry.tags[`v1.0.${r}`] = `sha256:${hex}`;
    entry.hashes[`sha256:${hex}`] = { tag: `v1.0.${r}`, path: rel };
    if (r === R - 1) entry.tags.latest = `sha256:${hex}`;
  }
  registry[name] = entry;
}
fs.writeFileSync(path.join(root, 'registry.json'), JSON.stringify(registry, null, 2) + '\n');
