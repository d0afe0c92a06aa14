for (;;) { const x = 7n ** 60000n; }
