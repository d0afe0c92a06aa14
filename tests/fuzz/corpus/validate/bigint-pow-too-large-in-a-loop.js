for (;;) { const x = 7n ** 600002n; }
