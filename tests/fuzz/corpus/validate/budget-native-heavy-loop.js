const a = []; for (;;)new Error(new Array(1e5).fill(1));
