const s = 'a'.repeat(2e5); for (;;) s.replaceAll('a', 'bb');
