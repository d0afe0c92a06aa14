module.exports = { get metadata() { throw new TypeError('no'); }, create() {} };
