const a = new Uint16Array(12 << 20);
for (let i = 0; i < 4096; i++) a[i] = (i * 40503) & 65535;
for (let n = 4096; n < a.length; n *= 2) a.copyWithin(n, 0, n);
a.sort();
