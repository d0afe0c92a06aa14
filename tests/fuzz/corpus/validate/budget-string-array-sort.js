const a = Object.keys(new Int8Array(1 << 18)).reverse();
for (;;) a.toSorted();
