if (true) throw 'nope';
